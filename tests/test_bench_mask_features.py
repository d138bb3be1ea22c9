"""The dense-vs-factored mask-logit benchmark runs at a tiny size, and checks both agree."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_mask_features  # noqa: E402


def test_both_sides_agree_and_are_timed():
    for grad in (False, True):
        row = bench_mask_features.measure(32, 2, grad, repeats=1)
        assert row["dense_ms"] > 0 and row["factored_ms"] > 0
        assert row["ratio"] == row["factored_ms"] / row["dense_ms"]
