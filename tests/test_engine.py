"""End to end on a tiny generated benchmark: train, log, checkpoint, resume, evaluate.

One tiny model (non-pretrained EfficientNet-Lite0, 32-d heads, 64 px crops) trains for a few
steps; the real offline MiniLM gives the text embeddings (loaded once per process).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from celseg.cli import main
from celseg.engine.logger import read_log

TINY = [
    "model.pretrained=false", "model.hidden_dim=32", "model.mask_dim=32", "model.num_queries=4",
    "model.dec_layers=1", "model.nheads=2", "model.dim_feedforward=64", "model.vlm=minilm",
    "data.crop_size=64", "data.max_val=4", "train.batch_size=2", "train.iterations=4",
    "train.warmup_iters=1", "train.log_every=1", "train.ckpt_every=2", "train.device=cpu",
    "eval.batch_size=4",
]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from celseg.data.synthetic import generate

    root = tmp_path_factory.mktemp("tiny") / "data"
    generate(root, seed=0, n_train=8, n_val=4, size=64, n_captions=0)
    return root


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("CELSEG_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def _cfg(tiny_root, out, extra=()):
    from celseg.config import load_config

    return load_config(None, [*TINY, f"data.root={tiny_root}", f"train.out_dir={out}", *extra])


def _losses(out):
    return {r["step"]: r["loss"] for r in read_log(out / "log.jsonl") if "loss" in r}


@pytest.fixture(scope="module")
def full_run(tiny_root, cache_env, tmp_path_factory):
    """An uninterrupted 4-step run (shared by several tests)."""
    from celseg.engine.trainer import train

    out = tmp_path_factory.mktemp("runs") / "full"
    summary = train(_cfg(tiny_root, out), progress=False)
    return out, summary


def test_train_writes_run_folder(full_run) -> None:
    out, summary = full_run
    for name in ("config.yaml", "log.jsonl", "metrics.json", "checkpoints/last.safetensors",
                 "checkpoints/last.state.pt"):
        assert (out / name).is_file(), name
    losses = _losses(out)
    assert sorted(losses) == [1, 2, 3, 4]
    assert all(math.isfinite(v) for v in losses.values())
    record = next(r for r in read_log(out / "log.jsonl") if r.get("step") == 1 and "loss" in r)
    terms = [k for k in record if k.startswith("loss_")]
    assert terms and math.isclose(sum(record[k] for k in terms), record["loss"], rel_tol=1e-5)
    assert record["img_s"] > 0 and record["lr"] > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["per_class"]) and {"miou_seen", "miou_unseen", "hiou"} <= set(metrics)
    assert metrics["step"] == 4 and summary["step"] == 4


def test_resume_gives_same_next_step_loss(full_run, tiny_root, tmp_path) -> None:
    from celseg.config import save_config
    from celseg.engine.trainer import train

    full_out, _ = full_run
    out = tmp_path / "resumed"
    cfg = _cfg(tiny_root, out)
    interrupted = train(cfg, progress=False, max_steps=2)  # as if killed after step 2
    assert interrupted == {"step": 2, "stopped": True}
    assert not (out / "metrics.json").exists()
    # a new run into the same folder is refused without --resume / --overwrite
    save_config(cfg, tmp_path / "cfg.yaml")
    assert main(["train", "-c", str(tmp_path / "cfg.yaml"), "--no-progress"]) == 2
    assert main(["train", "-c", str(tmp_path / "cfg.yaml"), "--no-progress", "--resume"]) == 0
    want, got = _losses(full_out), _losses(out)
    assert sorted(got) == [1, 2, 3, 4]  # the log holds each step once
    for step in (3, 4):
        assert got[step] == pytest.approx(want[step], rel=1e-5, abs=1e-6), step


def test_evaluate_cli_matches_naive_per_image_reference(full_run, tiny_root, tmp_path) -> None:
    from celseg.config import EvalConfig
    from celseg.data.classes import load_classes
    from celseg.engine.checkpoint import load_segmenter
    from celseg.engine.predictor import Predictor
    from celseg.vlm.loading import load_vlm_cached

    out, _ = full_run
    report = tmp_path / "eval.json"
    assert main(["evaluate", "--ckpt", str(out), "--out", str(report), "--no-progress",
                 "--device", "cpu"]) == 0
    summary = json.loads(report.read_text())
    assert summary["num_pixels"] == 4 * 64 * 64
    # reference: one image at a time through the predictor, accuracy counted with numpy
    model, _ = load_segmenter(out)
    info = load_classes(tiny_root)
    predictor = Predictor(model, load_vlm_cached("minilm"), EvalConfig(ensemble=False))
    assert predictor.protocol == "segmenter"  # minilm has no image tower, as in the run
    correct = total = 0
    for path in sorted((tiny_root / "images" / "val").iterdir()):
        image = np.asarray(Image.open(path).convert("RGB"))
        gt = np.asarray(Image.open(tiny_root / "annotations" / "val" / f"{path.stem}.png"))
        pred = predictor.segment(image, list(info.names))
        valid = gt != 255
        correct += int((pred[valid] == gt[valid]).sum())
        total += int(valid.sum())
    assert summary["pixel_acc"] == pytest.approx(100.0 * correct / total, abs=1e-6)


def test_baseline_reports_unseen_as_background(tiny_root, cache_env, tmp_path) -> None:
    from celseg.engine.trainer import train

    summary = train(_cfg(tiny_root, tmp_path / "b", ["model.mode=background_embedding",
                                                      "train.iterations=2"]), progress=False)
    assert 0.0 <= summary["unseen_as_background"] <= 100.0
    assert 0.0 <= summary["seen_as_background"] <= 100.0


def test_evaluate_sliding_window_and_calibration(full_run, tmp_path) -> None:
    out, _ = full_run
    report = tmp_path / "eval.json"
    assert main(["evaluate", "--ckpt", str(out), "--out", str(report), "--no-progress",
                 "--device", "cpu", "--set", "eval.sliding_window=true", "eval.window_size=32",
                 "eval.window_stride=24", "eval.seen_calibration=0.1"]) == 0
    summary = json.loads(report.read_text())
    assert summary["num_pixels"] == 4 * 64 * 64 and summary["seen_calibration"] == 0.1
    assert main(["evaluate", "--ckpt", str(out), "--set", "train.lr=1"]) == 2
