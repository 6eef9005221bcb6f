"""``python -m tierwise.collection summary TABLE``: per-model accuracy, cost, tokens and latency."""

import sys

from .report import summary

if len(sys.argv) != 3 or sys.argv[1] != "summary":
    sys.exit("usage: python -m tierwise.collection summary TABLE")

import pandas as pd  # noqa: E402

with pd.option_context("display.width", 200, "display.max_columns", 20):
    print(summary(sys.argv[2]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
