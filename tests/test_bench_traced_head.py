"""The traced-head benchmark runs at a tiny size with random weights, outputs bit-identical."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_traced_head  # noqa: E402


def test_eager_and_traced_agree_and_are_timed():
    [row] = bench_traced_head.measure(None, repeats=1, settings=((64, 1),))
    assert row["bit_identical"] is True
    assert row["eager_ms"] > 0 and row["traced_ms"] > 0
