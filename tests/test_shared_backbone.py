"""Shared backbone (model.backbone=vlm): the VLM's frozen image tower feeds the pixel decoder and,
from the same pass, gives the dense VLM features (``outputs["vlm_dense"]``).

Both kinds are tested by being listed in ``KINDS``: the LiT default VLM (a random tower written
with ``save_lit``) and the tiny random CLIP that tests/test_vlm_clip.py writes.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
import torch.nn.functional as F
from test_vlm_clip import _reference_dense, _write_tiny_clip

from celseg.config import LossConfig, ModelConfig, TrainConfig
from celseg.data.transforms import normalize
from celseg.errors import CelsegError, ModelLoadError
from celseg.losses.criterion import build_criterion
from celseg.losses.targets import build_vocab_lut, labels_to_targets, labels_to_vocab
from celseg.models.build import build_segmenter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

KINDS = ["lit", "clip"]
DIMS = {"lit": 384, "clip": 16}
DENSE_STRIDE = {"lit": 32, "clip": 8}  # LiT head map; tiny CLIP patch size
TINY = ModelConfig(backbone="vlm", hidden_dim=32, mask_dim=16, num_queries=5, dec_layers=2,
                   nheads=2, dim_feedforward=32)


def _write_lit(folder, seed: int = 0) -> None:
    from celseg.vlm.lit import build_lit, save_lit

    torch.manual_seed(seed)
    tower = build_lit(pretrained_backbone=False)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval vs train mode matters
        for m in tower.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    save_lit(tower, folder)


@pytest.fixture(scope="module")
def vlm_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlms")
    _write_lit(root / "lit")
    _write_tiny_clip(root / "clip")
    return {"lit": root / "lit", "clip": root / "clip"}


def _model(kind, vlm_dirs, **changes):
    cfg = dataclasses.replace(TINY, vlm=str(vlm_dirs[kind]), **changes)
    return build_segmenter(cfg, DIMS[kind])


def _text(c, d, seed=0):
    return F.normalize(torch.randn(c, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _tower_params(model):
    return [(n, p) for n, p in model.named_parameters() if n.startswith("backbone.tower.")]


@pytest.mark.parametrize("kind", KINDS)
def test_forward_shapes_frozen_tower_and_every_other_parameter_gets_gradient(kind, vlm_dirs):
    torch.manual_seed(0)
    model = _model(kind, vlm_dirs).train()
    assert model.vlm_tower_is_shared
    images = normalize(torch.rand(2, 3, 64, 64))
    out = model(images, _text(7, DIMS[kind]))
    assert out["pred_logits"].shape == (2, 5, 7)
    assert out["pred_masks"].shape == (2, 5, 16, 16)
    n = 64 // DENSE_STRIDE[kind]
    dense = out["vlm_dense"]
    assert dense.shape == (2, DIMS[kind], n, n) and dense.dtype == torch.float32
    assert not dense.requires_grad
    assert torch.allclose(dense.norm(dim=1), torch.ones(2, n, n), atol=1e-5)
    for t in (out["pred_logits"], out["pred_masks"], dense):
        assert torch.isfinite(t).all()

    tower = _tower_params(model)
    assert tower and not [n for n, p in tower if p.requires_grad]
    assert all(not m.training for m in model.backbone.tower.modules())

    labels = torch.randint(0, 7, (2, 64, 64))
    lut = build_vocab_lut(list(range(7)))
    crit = build_criterion(LossConfig(pixel_weight=1.0, ranking_weight=1.0), False)
    sum(crit(out, labels_to_targets(labels, lut), labels_to_vocab(labels, lut)).values()).backward()
    assert all(p.grad is None for _, p in tower)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert trainable and missing == []


@pytest.mark.parametrize("kind", KINDS)
def test_optimizer_skips_the_tower_and_trains_new_modules_at_the_head_lr(kind, vlm_dirs):
    from celseg.engine.schedule import build_optimizer

    model = _model(kind, vlm_dirs)
    opt = build_optimizer(model, TrainConfig(lr=1e-3, backbone_lr_mult=0.1))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert not [n for n, p in _tower_params(model) if id(p) in lr_of]
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert all(id(p) in lr_of for p in trainable.values())
    assert all(lr == pytest.approx(1e-3) for lr in lr_of.values())  # nothing pretrained trains
    if kind == "clip":
        assert any(n.startswith("backbone.pyramid.") for n in trainable)


def test_tower_batchnorm_statistics_stay_fixed_in_train_mode(vlm_dirs):
    model = _model("lit", vlm_dirs).train()
    bns = [m for m in model.backbone.tower.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bns]
    model(normalize(torch.rand(2, 3, 64, 64)) * 3, _text(2, 384))
    assert bns and all(torch.equal(a, m.running_mean) for a, m in zip(before, bns, strict=True))


@pytest.mark.parametrize("scale,original", [(1.0, True), (2.0, False), (2.0, True)])
def test_lit_vlm_dense_equals_dense_features(scale, original, vlm_dirs):
    from celseg.vlm.registry import load_vlm

    vlm = load_vlm(str(vlm_dirs["lit"]))
    vlm.dense_scale = scale
    model = _model("lit", vlm_dirs, vlm_input_scale=scale,
                   vlm_original_strides=original).eval()
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(normalize(images), _text(3, 384))
        ref = vlm.dense_features(images)
    assert out["vlm_dense"].shape == ref.shape == (2, 384, int(2 * scale), int(3 * scale))
    assert torch.allclose(out["vlm_dense"], ref, atol=1e-4), (out["vlm_dense"] - ref).abs().max()
    finer = 1 if original else scale  # original strides: the masks stay at H/4 of the input
    assert out["pred_masks"].shape[-2:] == (int(16 * finer), int(24 * finer))
    if original and scale == 2.0:  # the decoder reads the 2x trunk's res3, res4, res5, pooled
        assert model.backbone.channels == {"res2": 40, "res3": 112, "res4": 320, "res5": 320}


@pytest.mark.parametrize("size", [(32, 32), (48, 64)])
def test_clip_vlm_dense_equals_dense_features_and_hand_computation(size, vlm_dirs):
    from celseg.vlm.registry import load_vlm

    vlm = load_vlm(str(vlm_dirs["clip"]))
    model = _model("clip", vlm_dirs).eval()
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        dense = model(normalize(images), _text(3, 16))["vlm_dense"]
    ref = _reference_dense(vlm_dirs["clip"], images)
    assert dense.shape == (2, 16, size[0] // 8, size[1] // 8)
    assert torch.allclose(dense, vlm.dense_features(images), atol=1e-4)
    assert torch.allclose(dense, ref, atol=1e-4), (dense - ref).abs().max()


def test_pyramid_levels_and_sizes():
    from celseg.models.vlm_backbone import SimpleFeaturePyramid, pyramid_layers

    assert pyramid_layers(12) == (3, 6, 8, 11)  # ViT-B: up to the last block's input
    assert pyramid_layers(2) == (0, 0, 1, 1)
    pyr = SimpleFeaturePyramid(32, 16, patch_size=14)  # not a power of two: exact sizes anyway
    tokens = [torch.randn(1, 4 * 5, 32) for _ in range(4)]
    out = pyr(tokens, (4, 5), (56, 70))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (1, 16, 14, 18), "res3": (1, 16, 7, 9), "res4": (1, 16, 4, 5),
        "res5": (1, 16, 2, 3)}


def test_text_only_vlm_and_wrong_width_are_errors(vlm_dirs):
    with pytest.raises(ModelLoadError, match="image tower"):
        build_segmenter(dataclasses.replace(TINY, vlm="minilm"), 384)
    with pytest.raises(ModelLoadError, match="384"):
        build_segmenter(dataclasses.replace(TINY, vlm=str(vlm_dirs["lit"])), 16)
    with pytest.raises(CelsegError, match="'model.vlm_input_scale': value 0.0"):
        _model("lit", vlm_dirs, vlm_input_scale=0.0)  # the config's rule, before any loading


def test_train_three_steps_then_load_without_the_same_vlm_weights(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from celseg.cli import main
    from celseg.data.synthetic import generate
    from celseg.engine.checkpoint import load_segmenter

    monkeypatch.setenv("CELSEG_CACHE", str(tmp_path / "cache"))
    root, vlm, out = tmp_path / "data", tmp_path / "vlm", tmp_path / "run"
    generate(root, seed=0, n_train=4, n_val=2, size=64, n_captions=0)
    _write_lit(vlm)
    sets = ["model.backbone=vlm", f"model.vlm={vlm}", "model.hidden_dim=32", "model.mask_dim=32",
            "model.num_queries=4", "model.dec_layers=1", "model.nheads=2",
            "model.dim_feedforward=64", f"data.root={root}", "data.crop_size=64",
            "train.batch_size=2", "train.iterations=3", "train.warmup_iters=1",
            "train.ckpt_every=0", "train.device=cpu", f"train.out_dir={out}",
            "eval.batch_size=2"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  log_every: 1\n")
    assert main(["train", "-c", str(cfg), "--no-progress", "--set", *sets]) == 0
    saved = load_file(str(out / "checkpoints" / "last.safetensors"))
    assert any(k.startswith("backbone.tower.") for k in saved)

    _write_lit(vlm, seed=1)  # the folder now holds other weights of the same architecture
    model, loaded_cfg = load_segmenter(out)
    assert loaded_cfg.model.backbone == "vlm" and model.vlm_tower_is_shared
    mine = model.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in saved.items())
    with torch.no_grad():
        outputs = model(normalize(torch.rand(1, 3, 64, 64)), _text(3, 384))
    assert outputs["vlm_dense"].shape == (1, 384, 2, 2)

    (vlm / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="model.vlm="):
        load_segmenter(out)
