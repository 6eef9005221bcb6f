#!/usr/bin/env bash
# Rebuild the shipped default router for the embedded local pyramid, end to end:
#   1. collect outcomes on exactly those models (scripts/collect_default.sh; resumable),
#   2. train a router on them (--kind auto: the best of knn/mf/linear/ensemble by 5-fold CV AIQ)
#      -> src/tierwise/assets/default_router.tw
#      (5-fold CV metrics stored inside; default knob calibrated to 95% of the top model's quality),
#   3. measure it against the zero router and the logprob cascade -> docs/results.md (section "local")
#      and docs/img/frontier_local.png.
#
# Usage: scripts/build_default_router.sh [N_MMLU] [N_GSM8K]     (defaults 300 60; ~1.5 h on 2 cores: the 1.5B model writes ~20 s per GSM8K answer)
set -euo pipefail
cd "$(dirname "$0")/.."
N_MMLU="${1:-300}"
N_GSM="${2:-60}"
TABLE=data/local/local_pyramid.csv.gz

bash scripts/collect_default.sh "$N_MMLU" "$N_GSM"
tierwise train "$TABLE" --out src/tierwise/assets/default_router.tw --kind auto --target quality=0.95
python bench/router_quality.py --only local
