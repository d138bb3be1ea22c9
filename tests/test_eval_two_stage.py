"""Two-stage inference inside ``celseg evaluate`` (``eval.two_stage``), against calling
``two_stage_probs`` by hand, and ``celseg evaluate -c EVAL.yaml``.

A tiny segmenter trains for one step with a tiny untrained LiT VLM as ``model.vlm`` (its text
embeddings are MiniLM's, its image tower an untrained EfficientNet-Lite0), so the two-stage
image encoder defaults to the model's VLM.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from celseg.cli import main

TINY = [
    "model.pretrained=false", "model.hidden_dim=32", "model.mask_dim=32", "model.num_queries=4",
    "model.dec_layers=1", "model.nheads=2", "model.dim_feedforward=64",
    "data.crop_size=64", "data.max_val=2", "train.batch_size=2", "train.iterations=1",
    "train.warmup_iters=0", "train.log_every=1", "train.ckpt_every=1", "train.device=cpu",
    "eval.batch_size=1",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from celseg.config import load_config
    from celseg.data.synthetic import generate
    from celseg.engine.trainer import train
    from celseg.vlm.lit import build_lit, save_lit

    mp = pytest.MonkeyPatch()
    base = tmp_path_factory.mktemp("two_stage")
    mp.setenv("CELSEG_CACHE", str(base / "cache"))
    root = base / "data"
    generate(root, seed=0, n_train=4, n_val=2, size=64, n_captions=0)
    torch.manual_seed(0)
    vlm_dir = save_lit(build_lit(pretrained_backbone=False), base / "lit")
    out = base / "run"
    cfg = load_config(None, [*TINY, f"model.vlm={vlm_dir}", f"data.root={root}",
                             f"train.out_dir={out}"])
    train(cfg, progress=False)
    yield out, root, vlm_dir
    mp.undo()


def _evaluate(out: Path, tmp_path: Path, *extra: str) -> dict:
    report = tmp_path / "eval.json"
    assert main(["evaluate", "--ckpt", str(out), "--out", str(report), "--no-progress",
                 "--device", "cpu", *extra]) == 0
    return json.loads(report.read_text())


def _hand_reference(out: Path, root: Path, w_seen: float, w_unseen: float, crop: int) -> dict:
    """Per-image two-stage prediction with ``two_stage_probs`` called directly."""
    from celseg.data.classes import load_classes
    from celseg.data.dataset import SegmentationDataset
    from celseg.data.transforms import denormalize
    from celseg.engine.checkpoint import load_segmenter
    from celseg.evaluation.metrics import ConfusionMatrix, summarize
    from celseg.models.two_stage import two_stage_probs
    from celseg.vlm.cache import text_embeddings
    from celseg.vlm.registry import load_vlm

    model, cfg = load_segmenter(out)
    model.eval()
    info = load_classes(root)
    vlm = load_vlm(cfg.model.vlm)
    emb = text_embeddings(vlm, list(info.names)).float()
    ds = SegmentationDataset(root, "val", max_items=2)
    cm = ConfusionMatrix(info.num_classes)
    with torch.no_grad():
        for i in range(len(ds)):
            image, label, _ = ds[i]
            outputs = model(image[None], emb)
            probs = two_stage_probs(outputs, denormalize(image[None]).clamp(0, 1), vlm, emb,
                                    info.unseen_ids, model.has_background, w_seen, w_unseen,
                                    crop_size=crop)
            probs = F.interpolate(probs, size=label.shape, mode="bilinear", align_corners=False)
            cm.update(probs.argmax(1)[0], label)
    return summarize(cm.matrix, info)


def test_two_stage_matches_direct_call(run, tmp_path):
    out, root, _ = run
    got = _evaluate(out, tmp_path, "--set", "eval.two_stage=true", "eval.clip_weight_seen=0.3",
                    "eval.clip_weight_unseen=0.7", "eval.two_stage_crop_size=32")
    want = _hand_reference(out, root, 0.3, 0.7, 32)
    assert got["num_pixels"] == want["num_pixels"] == 2 * 64 * 64
    assert got["pixel_acc"] == pytest.approx(want["pixel_acc"], abs=1e-9)
    for name, row in want["per_class"].items():
        a, b = got["per_class"][name]["iou"], row["iou"]
        if np.isnan(b):  # absent class: written to JSON as null
            assert a is None or np.isnan(a), name
        else:
            assert a == pytest.approx(b, abs=1e-9), name
    assert got["two_stage"] == {"vlm": got["two_stage"]["vlm"], "clip_weight_seen": 0.3,
                                "clip_weight_unseen": 0.7, "crop_size": 32}


def test_zero_clip_weights_equal_single_stage(run, tmp_path):
    out, _, _ = run
    plain = _evaluate(out, tmp_path)
    assert "two_stage" not in plain
    neutral = _evaluate(out, tmp_path, "--set", "eval.two_stage=true",
                        "eval.clip_weight_seen=0", "eval.clip_weight_unseen=0",
                        "eval.two_stage_crop_size=32")
    assert plain["protocol"] == "ensemble" and neutral["protocol"] == "two_stage"
    segmenter = plain["protocols"]["segmenter"]
    assert neutral["pixel_acc"] == pytest.approx(segmenter["pixel_acc"], abs=1e-9)


def test_two_stage_with_sliding_window(run, tmp_path):
    out, _, vlm_dir = run
    got = _evaluate(out, tmp_path, "--set", "eval.two_stage=true",
                    f"eval.two_stage_vlm={vlm_dir}", "eval.two_stage_crop_size=32",
                    "eval.sliding_window=true", "eval.window_size=32", "eval.window_stride=24")
    assert got["num_pixels"] == 2 * 64 * 64 and 0.0 <= got["pixel_acc"] <= 100.0


def test_evaluate_with_config_file(run, tmp_path, capsys):
    out, root, _ = run
    (tmp_path / "base.yaml").write_text(
        "model:\n  mode: background_embedding\n"  # ignored: the model is the checkpoint's
        "data:\n  root: elsewhere\n"
        "eval:\n  clip_weight_unseen: 0.6\n  batch_size: 2\n")
    (tmp_path / "ev.yaml").write_text(
        f"base: base.yaml\ndata:\n  root: {root}\neval:\n  two_stage: true\n")
    got = _evaluate(out, tmp_path, "-c", str(tmp_path / "ev.yaml"),
                    "--set", "eval.two_stage_crop_size=32")
    assert got["data"] == str(root) and got["config"] == str(tmp_path / "ev.yaml")
    assert got["two_stage"]["clip_weight_unseen"] == 0.6
    assert got["two_stage"]["clip_weight_seen"] == 0.2 and got["two_stage"]["crop_size"] == 32
    # data.* keys may be --set too; other sections still may not
    got = _evaluate(out, tmp_path, "--set", f"data.root={root}")
    assert got["data"] == str(root) and "two_stage" not in got
    assert main(["evaluate", "--ckpt", str(out), "--set", "model.mode=background_free"]) == 2
    (tmp_path / "bad.yaml").write_text("eval:\n  two_stages: true\n")
    assert main(["evaluate", "--ckpt", str(out), "-c", str(tmp_path / "bad.yaml")]) == 2
    assert "two_stages" in capsys.readouterr().err


def test_paper_configs_load_with_two_stage_keys():
    from celseg.config import load_config

    paper = Path(__file__).resolve().parents[1] / "configs" / "paper"
    for path in sorted(paper.glob("*.yaml")):
        load_config(path)
    voc = load_config(paper / "voc_base.yaml").eval
    assert (voc.clip_weight_seen, voc.clip_weight_unseen) == (0.3, 0.7)
    coco = load_config(paper / "coco_stuff_base.yaml").eval
    assert (coco.clip_weight_seen, coco.clip_weight_unseen) == (0.2, 0.8)
    for name in ("voc_base", "coco_stuff_base", "ov_coco_stuff_train", "ov_eval_ade847"):
        assert not load_config(paper / f"{name}.yaml").eval.two_stage  # opt-in: --set
    ade = load_config(paper / "ov_eval_ade847.yaml").eval
    assert (ade.clip_weight_seen, ade.clip_weight_unseen) == (0.2, 0.8)


def test_protocols_computed_together_equal_separate_evaluations(run, tmp_path):
    out, _, _ = run
    together = _evaluate(out, tmp_path)
    assert together["protocol"] == "ensemble"
    assert set(together["protocols"]) == {"ensemble", "segmenter", "vlm"}
    alone = _evaluate(out, tmp_path, "--set", "eval.ensemble=false")
    assert alone["protocol"] == "segmenter" and set(alone["protocols"]) == {"segmenter"}
    vlm = _evaluate(out, tmp_path, "--set", "eval.ensemble_alpha=1", "eval.ensemble_beta=1")
    assert vlm["protocol"] == "vlm"
    for name, single in (("segmenter", alone), ("vlm", vlm)):
        assert together["protocols"][name]["pixel_acc"] == single["pixel_acc"]
        assert together["protocols"][name]["confusion"] == single["protocols"][name]["confusion"]
