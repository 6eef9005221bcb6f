"""collect: prompt sets, the wide table, resume after SIGKILL, and one real SmolLM2 run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tierwise.promptsets import load_promptset, stratified_sample
from tierwise.table import TableError, load_table

SRC = str(Path(__file__).resolve().parents[1] / "src")
DATA = Path(__file__).resolve().parents[1] / "data" / "outcomes"


def test_stratified_sample_is_proportional_and_fixed():
    sources = ["a"] * 600 + ["b"] * 300 + ["c"] * 100
    idx = stratified_sample(sources, 100, seed=3)
    assert len(idx) == 100 and idx == sorted(idx) and len(set(idx)) == 100
    picked = [sources[i] for i in idx]
    assert (picked.count("a"), picked.count("b"), picked.count("c")) == (60, 30, 10)
    assert stratified_sample(sources, 100, seed=3) == idx
    assert stratified_sample(sources, 100, seed=4) != idx
    assert stratified_sample(sources, 5000) == list(range(1000))
    # nested: a bigger sample contains the smaller one, so a bigger rerun reuses collected cells
    assert set(stratified_sample(sources, 40, seed=3)) <= set(idx)


@pytest.mark.skipif(not (DATA / "mmlu_pro.csv.gz").exists(), reason="repo data missing")
def test_builtin_sets():
    mmlu = load_promptset("mmlu_pro", limit=140)
    assert len(mmlu) == 140 and mmlu.default_grader == "choice-logprob"
    assert len({it["source"] for it in mmlu.items}) == 14  # every subject, in proportion
    assert all(it["answer"] in "ABCDEFGHIJ" for it in mmlu.items)
    gsm = load_promptset("gsm8k", limit=10)
    assert len(gsm) == 10 and gsm.default_grader == "numeric" and "####" in gsm.items[0]["answer"]


def test_prompt_files_keep_their_values_as_written(tmp_path):
    """pandas guessed types: the gold "007" became 7 and "3.10" 3.1 (exact grading then failed), ids "007" and
    "7" collided; a JSONL file with a byte-order mark was unreadable."""
    j = tmp_path / "codes.jsonl"
    j.write_bytes(b'\xef\xbb\xbf{"prompt": "Repeat: 007", "answer": "007", "item_id": "007"}\n'
                  b'{"prompt": "Repeat: 3.10", "answer": "3.10", "item_id": "010"}\n{"prompt": "n", "answer": 12}\n')
    c = tmp_path / "codes.csv"
    c.write_text("prompt,answer,item_id\nRepeat: 007,007,007\nRepeat: 3.10,3.10,010\n")
    for path in (j, c):
        items = load_promptset(path).items
        assert [(it["answer"], it["item_id"]) for it in items[:2]] == [("007", "007"), ("3.10", "010")], path
    assert load_promptset(j).items[2]["answer"] == 12  # a JSON number stays one


def test_user_sets_and_errors(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_text('{"question": "2+2?", "answer": "4"}\n{"question": "3+3?", "answer": "6"}\n')
    s = load_promptset(p)
    assert s.default_grader == "numeric" and s.items[0]["prompt"] == "2+2?" and s.items[0]["source"] == "mine"
    c = tmp_path / "mc.csv"
    pd.DataFrame({"prompt": ["Q1\nA. x\nB. y", "Q2\nA. x\nB. y"], "answer": ["A", "B"]}).to_csv(c, index=False)
    assert load_promptset(c).default_grader == "choice"
    o = tmp_path / "open.csv"
    pd.DataFrame({"prompt": ["Write a haiku"]}).to_csv(o, index=False)
    assert load_promptset(o).default_grader is None
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"text": ["x"]}).to_csv(bad, index=False)
    with pytest.raises(TableError, match="'prompt' or 'question' column"):
        load_promptset(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"prompt": "x"}\n{"prompt": "x"}\n')
    with pytest.raises(TableError, match="data row 2 repeats the prompt of data row 1"):
        load_promptset(dup)


# ------------------------------------------------------------------------------------------
# resume after kill -9: a fake backend is used ONLY here, to make the fault fast and countable

FAKE_RUN = textwrap.dedent(
    """
    import asyncio, os, sys, time, json
    from tierwise.backends.base import Backend, ChatResult
    from tierwise.collection import ModelSpec, run_collect
    from tierwise.graders import make_grader

    calls_log, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

    class Counting(Backend):
        context_window = 4096
        def __init__(self, name):
            self.name = name
        async def chat(self, messages, **kw):
            q = messages[-1]["content"]
            await asyncio.sleep(0.03)
            a, b = [int(x) for x in q.split()[2].rstrip("?").split("+")]
            # the 'small' model is wrong on odd a, the 'large' one always right
            answer = a + b + (1 if self.name == "small" and a % 2 else 0)
            with open(calls_log, "a") as fh:
                fh.write(f"{os.getpid()} {self.name} {q}\\n")
            return ChatResult(text=f"{a}+{b}. The answer is {answer}.", tokens_in=20, tokens_out=8,
                              token_logprobs=[-0.1 * (a % 3), -0.2])
        async def complete(self, body, **kw):
            raise NotImplementedError
        def stream(self, *a, **k):
            raise NotImplementedError

    items = [{"prompt": f"What is {i}+{2*i}?", "answer": str(3*i), "source": "arith", "item_id": str(i)} for i in range(n)]
    specs = [ModelSpec(m, m, p, 2*p, 4, (lambda m=m: Counting(m))) for m, p in (("small", 0.1), ("large", 1.0))]
    r = asyncio.run(run_collect(items, specs, make_grader("numeric"), out, progress=False))
    print(json.dumps({"computed": r.computed, "reused": r.reused}))
    """
)


def _sidecar_cells(path: Path) -> set[tuple[str, str]]:
    db = sqlite3.connect(path)
    try:
        return set(db.execute("SELECT model, prompt_hash FROM cells").fetchall())
    finally:
        db.close()


def _calls(log: Path, pid: int | None = None) -> list[tuple[str, str]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        p, model, q = line.split(" ", 2)
        if pid is None or int(p) == pid:
            out.append((model, q))
    return out


def test_resume_after_sigkill_recomputes_no_finished_cell(tmp_path):
    from tierwise.graders import make_grader
    from tierwise.promptsets import prompt_hash

    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)
    calls, out, n = tmp_path / "calls.log", tmp_path / "t.csv.gz", 60
    sidecar = Path(str(out) + ".cells.sqlite")
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, str(script), str(calls), str(out), str(n)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        # kill -9 mid-way through the SECOND model, so one model is finished and one half done
        while time.time() < deadline and proc.poll() is None:
            try:
                if len(_sidecar_cells(sidecar)) >= n + 15:
                    break
            except sqlite3.Error:  # not created yet
                pass
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert not out.exists(), "the table is only written at the end"
    saved = _sidecar_cells(sidecar)
    first_calls = _calls(calls, proc.pid)
    assert n + 15 <= len(saved) < 2 * n
    in_flight = len(first_calls) - len(saved)
    assert 0 <= in_flight <= 4  # at most the concurrency was lost

    second = subprocess.run([sys.executable, str(script), str(calls), str(out), str(n)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    counts = json.loads(second.stdout.strip().splitlines()[-1])
    grader = make_grader("numeric")

    def key(model, q):
        return (model, prompt_hash(json.dumps(grader.messages({"prompt": q}), sort_keys=True)))

    rerun_all = [key(m, q) for m, q in _calls(calls)[len(first_calls):]]
    assert not set(rerun_all) & saved, "a finished cell was recomputed"
    assert len(rerun_all) == 2 * n - len(saved) == counts["computed"]
    assert counts["reused"] == len(saved)

    table = load_table(out)
    assert table.models == ["small", "large"] and len(table) == n
    assert not np.isnan(table.correct).any()
    # grading is right: large always correct, small wrong exactly on odd i
    expected_small = np.array([0.0 if i % 2 else 1.0 for i in range(n)])
    assert np.array_equal(table.correct[:, 0], expected_small) and table.correct[:, 1].all()
    frame = pd.read_csv(out)
    assert frame["cost|large"].iloc[0] == pytest.approx((20 * 1.0 + 8 * 2.0) / 1e6)
    assert frame["logprob|small"].iloc[1] == pytest.approx((-0.1 - 0.2) / 2)

    # a third run computes nothing and writes an identical file
    before = out.read_bytes()
    third = subprocess.run([sys.executable, str(script), str(calls), str(out), str(n)], env=env,
                           capture_output=True, text=True, timeout=120)
    assert json.loads(third.stdout.strip().splitlines()[-1]) == {"computed": 0, "reused": 2 * n}
    assert out.read_bytes() == before


# ------------------------------------------------------------------------------------------
# real model


@pytest.mark.slow
def test_collect_cli_on_real_smollm2(tmp_path):
    pytest.importorskip("llama_cpp")
    from typer.testing import CliRunner

    from tierwise.cli import app
    from tierwise.config import default_pyramid

    small = default_pyramid().models[0]
    try:
        from tierwise.weights import model_path

        model_path(small.embedded)
    except Exception as exc:
        pytest.skip(f"embedded SmolLM2 unavailable: {exc}")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        '{"prompt": "Which planet is largest?\\nA. Mars\\nB. Jupiter\\nC. Venus\\nD. Mercury", "answer": "B"}\n'
        '{"prompt": "What color is the sky on a clear day?\\nA. Green\\nB. Red\\nC. Blue\\nD. Black", "answer": "C"}\n'
    )
    out = tmp_path / "real.csv"
    args = ["collect", str(prompts), "--out", str(out), "--grader", "choice-logprob", "--models", small.name, "-q"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    frame = pd.read_csv(out)
    col = f"logprob|{small.name}"
    assert set(frame[f"correct|{small.name}"]) <= {0.0, 1.0}
    assert frame[col].notna().all() and (frame[col] <= 0).all()
    assert (frame[f"tokens_in|{small.name}"] > 20).all() and (frame[f"tokens_out|{small.name}"] == 1).all()
    assert set(frame[f"pred|{small.name}"]) <= set("ABCD")
    r2 = CliRunner().invoke(app, args)
    assert r2.exit_code == 0 and "0 cells computed, 2 reused" in r2.output


def test_ray_flags_without_ray_installed_say_how_to_get_it(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tierwise.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: `import ray` fails
    cfg = tmp_path / "p.yaml"
    cfg.write_text("models:\n  - {name: api, backend: openai, endpoint: 'http://127.0.0.1:9/v1', model: m,"
                   " input_per_1m: 1, output_per_1m: 2}\n")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "2+2?", "answer": "4"}\n')
    out = tmp_path / "t.csv"
    r = CliRunner().invoke(app, ["collect", str(prompts), "--config", str(cfg), "--out", str(out), "--ray"])
    assert r.exit_code == 2 and "pip install 'tierwise[ray]'" in r.output, r.output
    assert not out.exists() and not Path(str(out) + ".cells.sqlite").exists()
    table = tmp_path / "t2.csv"
    pd.DataFrame({"prompt": [f"p{i}" for i in range(40)], "correct|a": [i % 2 for i in range(40)],
                  "correct|b": [1] * 40, "cost|a": [1.0] * 40, "cost|b": [2.0] * 40}).to_csv(table, index=False)
    r = CliRunner().invoke(app, ["eval", str(table), "--ray-address", "auto"])
    assert r.exit_code == 2 and "pip install 'tierwise[ray]'" in r.output, r.output


def test_repeated_item_ids_are_refused(tmp_path):
    p = tmp_path / "ids.jsonl"
    p.write_text('{"prompt": "2+2?", "answer": "4", "item_id": "x"}\n{"prompt": "3+3?", "answer": "6", "item_id": "x"}\n')
    with pytest.raises(TableError, match="repeats the item_id 'x' of data row 1"):
        load_promptset(p)


def test_a_corrected_gold_answer_is_a_new_cell():
    """The cell key was the prompt alone: after fixing a gold answer the old grade was reused, and the row
    read answer 6, prediction 5, correct 1."""
    from tierwise.collection.cells import Plan
    from tierwise.graders import make_grader

    grader = make_grader("numeric")
    before = Plan.of([{"prompt": "2+3?", "answer": "5"}, {"prompt": "1+1?", "answer": "2"}], grader)
    after = Plan.of([{"prompt": "2+3?", "answer": "6"}, {"prompt": "1+1?", "answer": "2"}], grader)
    assert before.hashes[0] != after.hashes[0] and before.hashes[1] == after.hashes[1]
    regex = make_grader("regex")
    a = Plan.of([{"prompt": "Say hello", "pattern": "(?i)hello"}], regex)
    b = Plan.of([{"prompt": "Say hello", "pattern": "goodbye"}], regex)
    assert a.hashes != b.hashes
