#!/usr/bin/env bash
# Reproduce data/local/local_pyramid.csv.gz: the embedded local pyramid
# (smollm2-135m < qwen2.5-coder-0.5b < qwen2.5-coder-1.5b, llama.cpp on CPU) answering
#   * a fixed-seed, subject-stratified sample of MMLU-Pro  (choice-logprob grader: one forward pass,
#     best valid option letter among the first token's top-20; confidence = that letter's log-prob)
#   * a fixed-seed sample of GSM8K test                    (numeric grader, max_tokens 256, temperature 0;
#     confidence = mean token log-prob of the answer)
# MMLU-Pro runs first because it is ~50x cheaper per cell: if the run is cut short, one complete
# table exists. Resumable: rerun the script and finished cells are taken from the sidecars.
#
# Usage: scripts/collect_default.sh [N_MMLU] [N_GSM8K]      (defaults 300 60)
# Env:   OUT_DIR (default data/local), WORK_DIR for the sidecars (default ~/.cache/tierwise/collect)
set -euo pipefail

N_MMLU="${1:-300}"
N_GSM="${2:-60}"
OUT_DIR="${OUT_DIR:-data/local}"
WORK_DIR="${WORK_DIR:-$HOME/.cache/tierwise/collect}"
mkdir -p "$OUT_DIR" "$WORK_DIR"
# llama.cpp's OpenMP threads spin while waiting; on a shared 2-core box that halves throughput
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

tw() {  # the installed CLI, or the source tree's
  if command -v tierwise >/dev/null 2>&1; then tierwise "$@"
  else python -c 'from tierwise.cli import main; main()' "$@"; fi
}

echo "[collect_default] $(date -u +%FT%TZ) start: mmlu_pro=$N_MMLU gsm8k=$N_GSM"

tw collect mmlu_pro --limit "$N_MMLU" --grader choice-logprob \
  --out "$OUT_DIR/mmlu_pro_${N_MMLU}.csv.gz" --sidecar "$WORK_DIR/mmlu_pro.cells.sqlite"

tw collect gsm8k --limit "$N_GSM" --grader numeric --max-tokens 256 \
  --out "$OUT_DIR/gsm8k_${N_GSM}.csv.gz" --sidecar "$WORK_DIR/gsm8k.cells.sqlite"

python - "$OUT_DIR" "$N_MMLU" "$N_GSM" <<'EOF'
import sys
from pathlib import Path
from tierwise.collection import merge_tables

out, n_mmlu, n_gsm = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
merge_tables([out / f"mmlu_pro_{n_mmlu}.csv.gz", out / f"gsm8k_{n_gsm}.csv.gz"], out / "local_pyramid.csv.gz")
print(f"[collect_default] wrote {out / 'local_pyramid.csv.gz'}")
EOF

python -m tierwise.collection summary "$OUT_DIR/local_pyramid.csv.gz"
echo "[collect_default] $(date -u +%FT%TZ) done"
