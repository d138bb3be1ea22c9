"""The attention-mask benchmark runs at a tiny size with random weights; both decoder paths
give the same final masks up to float rounding."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_attn_masks  # noqa: E402


def test_both_decoder_paths_agree_and_are_timed():
    [row] = bench_attn_masks.measure(None, repeats=1, settings=((64, 1),))
    assert row["max_abs_diff"] < 1e-3 and row["mask_pixels"] == 16 * 16 * 16
    assert row["stride4_ms"] > 0 and row["level_size_ms"] > 0
