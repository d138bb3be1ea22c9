"""The speed benchmark's paths run end to end at a tiny size (the CUDA figures come from the
same functions with ``--device cuda``)."""

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_speed  # noqa: E402


def test_voc_training_path_and_matcher_rows_at_a_tiny_size():
    cpu = torch.device("cpu")
    row = bench_speed.voc_throughput(cpu, steps=1, size=64, batch=2, queries=5)
    assert row["bench"] == "voc_train" and row["batch"] == 2 and row["queries"] == 5
    assert row["images_per_s"] > 0 and math.isnan(row["peak_mem_mb"])  # no CUDA here
    points = bench_speed.matcher_time(cpu, 12544, images=2, size=64, queries=5)
    full = bench_speed.matcher_time(cpu, 0, images=2, size=64, queries=5)
    assert points["ms_per_image"] > 0 and full["ms_per_image"] > 0


def test_train_ratio_row_has_both_sides():
    row = bench_speed.train_ratio("ranking", bench_speed.VARIANTS["ranking"], torch.device("cpu"),
                                  steps=1, size=64, batch=2)
    assert row["step_s"] > 0 and row["reference_s"] > 0
    assert row["ratio"] == row["step_s"] / row["reference_s"]


def test_inference_rows_with_random_weights_and_with_a_checkpoint(tmp_path, synthetic_root,
                                                                   make_tiny_run):
    """Both inference rows run: the default model with random weights (and an override), and a
    run folder's checkpoint with its dataset's names embedded by its VLM (here MiniLM)."""
    cpu = torch.device("cpu")
    row = bench_speed.inference_ratio(cpu, 64, 1, batch=2)
    assert row["weights"] == "random" and row["batch"] == 2
    assert row["ratio"] == row["full_ms"] / row["backbone_ms"] > 0
    model, _, _ = bench_speed._inference_model(cpu, None, ("model.pixel_decoder_conv=light",))
    assert "res2" in model.pixel_decoder.output  # the override reached the model
    make_tiny_run(tmp_path, f"data.root={synthetic_root}")
    row = bench_speed.inference_ratio(cpu, 64, 1, batch=1, ckpt=str(tmp_path))
    assert row["weights"] == "trained" and row["full_ms"] > 0
