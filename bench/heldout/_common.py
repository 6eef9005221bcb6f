"""What the held-out table converters share: reading a bare git mirror, and tierwise's own token estimate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from tierwise.prices import estimate_tokens  # noqa: E402,F401  (re-exported: the converters' tokens_in)


def git(git_dir: str, *args: str, check: bool = True) -> bytes:
    """``git --git-dir GIT_DIR ARGS...``'s output; a failure raises with git's own message."""
    p = subprocess.run(["git", "--git-dir", git_dir, *args], capture_output=True, check=False)
    if check and p.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {p.stderr.decode(errors='replace').strip()}")
    return p.stdout
