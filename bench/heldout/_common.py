"""What the held-out scripts share: reading a bare git mirror, tierwise's own token estimate (the converters),
and loading a converted table with some models left out (the evaluations)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from tierwise.prices import estimate_tokens  # noqa: E402,F401  (re-exported: the converters' tokens_in)
from tierwise.table import load_table  # noqa: E402


def table_parser(doc: str) -> argparse.ArgumentParser:
    """The evaluations' command line: converted tables, and ``--drop`` to leave models out by name prefix."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("tables", nargs="+", type=Path)
    ap.add_argument("--drop", action="append", default=[], help="leave out models whose name starts with this")
    return ap


def load_heldout(path, drop=()):
    """The table at ``path``, cleaned, without the models whose name starts with any of ``drop``."""
    table = load_table(path).clean()
    return table.with_models([m for m in table.models if not any(m.startswith(d) for d in drop)]) if drop else table


def git(git_dir: str, *args: str, check: bool = True) -> bytes:
    """``git --git-dir GIT_DIR ARGS...``'s output; a failure raises with git's own message."""
    p = subprocess.run(["git", "--git-dir", git_dir, *args], capture_output=True, check=False)
    if check and p.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {p.stderr.decode(errors='replace').strip()}")
    return p.stdout


def price_notes(models: list[str], prices: dict[str, tuple]) -> dict[str, dict]:
    """``{model: {input, output, note}}`` (USD per 1M tokens) for the provenance file, priced models only;
    ``prices[m]`` is a converter's ``(size_b, input, output, note)``."""
    return {m: {"input": prices[m][1], "output": prices[m][2], "note": prices[m][3]} for m in models if m in prices}


def write_prices_yaml(path: str, models: list[str], prices: dict[str, tuple], source: str) -> None:
    """The same prices as a tierwise price book (``tierwise eval --prices``)."""
    with open(path, "w") as fh:
        fh.write(f"# USD per 1M tokens; {source}\n")
        fh.write("output_tokens: 256\nmodels:\n")
        for m, p in price_notes(models, prices).items():
            fh.write(f"  {m}: {{input: {p['input']}, output: {p['output']}}}  # {p['note']}\n")
