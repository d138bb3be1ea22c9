"""The decoder build-mode benchmark runs at a tiny size with random weights."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_decoder_build  # noqa: E402


def test_every_build_and_run_mode_is_timed():
    rows = bench_decoder_build.decoder_rows(None, 64, repeats=1)
    assert [(r["built"], r["run"]) for r in rows] == [
        ("normal", "no_grad"), ("normal", "inference_mode"),
        ("inference_mode", "no_grad"), ("inference_mode", "inference_mode")]
    assert all(r["decoder_ms"] > 0 for r in rows)
