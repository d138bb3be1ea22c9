"""The pixel-decoder-conv benchmark runs at a tiny size: every option is timed against one
backbone reference, and each ratio is its time over the reference's."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_pixel_decoder_conv  # noqa: E402


def test_every_option_is_timed_against_the_backbone():
    rows = bench_pixel_decoder_conv.measure(repeats=1, inference=((64, 1),), train_size=64,
                                             train_batch=2)
    assert [(r["bench"], r["size"], r["batch"]) for r in rows] == [("train", 64, 2),
                                                                  ("inference", 64, 1)]
    for row in rows:
        for option in bench_pixel_decoder_conv.OPTIONS:
            assert row[f"{option}_ms"] > 0
            assert row[f"{option}_ratio"] == pytest.approx(
                row[f"{option}_ms"] / row["backbone_ms"])
