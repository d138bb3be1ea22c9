"""The grouped-points benchmark runs at a tiny size; both matcher forms give the same
assignments (they draw the same points)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_matcher_points  # noqa: E402


def test_both_matcher_forms_agree_and_are_timed():
    [row] = bench_matcher_points.measure(repeats=1, settings=((64, 8, 2),))
    assert row["same_assignments"] and row["points"] == 256
    assert row["every_point_ms_per_image"] > 0 and row["grouped_ms_per_image"] > 0
