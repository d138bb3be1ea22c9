"""The head-floor benchmark: its budget and floor are read off its own rows, and its operator
count follows the decoder's depth."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_head_floor  # noqa: E402


def test_budget_floor_and_operator_counts():
    one, two = (bench_head_floor.measure(None, repeats=1, sizes=(32, 64),
                                         extra=(f"model.dec_layers={n}",)) for n in (1, 2))
    for result in (one, two):
        rows = result["rows"]
        assert [r["size"] for r in rows] == [32, 64]
        assert all(r["backbone_ms"] > 0 and r["after_ms"] > 0 for r in rows)
        assert result["budget_ms"] == pytest.approx(0.3 * rows[-1]["backbone_ms"])
        assert result["floor_ms"] == rows[0]["after_ms"]
        assert result["floor_within_budget"] == (result["floor_ms"] <= result["budget_ms"])
        # one trace per size, the same operators at both sizes
        assert rows[0]["operators"] == rows[1]["operators"]
    # a decoder layer adds its attention, feed-forward and mask read-out operators
    assert two["rows"][0]["operators"] > one["rows"][0]["operators"] + 50
