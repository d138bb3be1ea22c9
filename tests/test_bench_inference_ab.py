"""The A/B inference benchmark loads a baseline checkout's model code beside this tree's: with
this tree as its own baseline both sides give the same labels and are timed."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_inference_ab  # noqa: E402


def test_a_baseline_runs_beside_this_tree():
    row = bench_inference_ab.measure(str(ROOT), None, size=64, batch=1, repeats=2)
    assert row["backbone_ms"] > 0 and row["baseline_after_ms"] > 0 and row["this_after_ms"] > 0
    assert row["this_ratio"] == pytest.approx(1 + row["this_after_ms"] / row["backbone_ms"])


def test_a_folder_without_the_models_is_named(tmp_path):
    with pytest.raises(SystemExit, match=str(tmp_path)):
        bench_inference_ab.measure(str(tmp_path), None, size=64, batch=1, repeats=1)
