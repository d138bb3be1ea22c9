"""The labels benchmark runs at a tiny size with random weights, and checks its routes agree."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_labels  # noqa: E402


def test_both_routes_agree_and_are_timed():
    for calibration in (0.0, 0.2):
        [row] = bench_labels.measure(None, 64, images=1, repeats=1, calibration=calibration)
        assert row["calibration"] == calibration
        assert all(row[k] > 0 for k in ("dense_ms", "labels_ms", "argmax_ms",
                                         "first_argmax_ms"))


def test_random_scores_are_the_worst_case_and_still_agree():
    [row] = bench_labels.measure(None, 64, images=1, repeats=1, calibration=0.2,
                                 random_scores=True)
    assert row["weights"] == "no (uniform-noise scores)" and row["labels_ms"] > 0
