"""The offline default VLM (LiT): dense/pooled consistency, pretraining, resume, save/load,
and the registry's errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from celseg.errors import ModelLoadError
from celseg.vlm.config import VLMConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")

COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "yellow": (240, 220, 30)}


def _write_captions(root, n: int = 12) -> None:
    """Tiny caption split: a coloured square on grey, caption "a <colour> square"."""
    (root / "captions" / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    with open(root / "captions" / "captions.jsonl", "w") as fh:
        for i in range(n):
            colour = list(COLORS)[i % 3]
            img = np.full((64, 64, 3), 128, np.uint8)
            y, x = rng.integers(0, 24, 2)
            img[y : y + 40, x : x + 40] = COLORS[colour]
            Image.fromarray(img).save(root / "captions" / "images" / f"{i}.png")
            fh.write(json.dumps({"image": f"images/{i}.png", "caption": f"a {colour} square",
                                 "class_ids": [i % 3], "split": "val" if i >= 9 else "train"})
                     + "\n")


@pytest.fixture(scope="module")
def text():
    from celseg.vlm.minilm import load_minilm_encoder

    return load_minilm_encoder()


def test_backbone_loads_every_pretrained_key() -> None:
    from celseg.models.efficientnet_lite import weights_path
    from celseg.vlm.lit import build_lit

    state = torch.load(weights_path(), weights_only=True, map_location="cpu")
    own = build_lit().backbone.state_dict()
    assert set(own) == set(state)
    assert all(torch.equal(own[k], state[k]) for k in state)


def test_dense_and_pooled_paths_agree(text) -> None:
    from celseg.vlm.lit import LiTModel, build_lit

    torch.manual_seed(0)
    tower = build_lit(pretrained_backbone=False).eval()
    vlm = LiTModel(tower, text, dense_scale=1.0).eval()
    images = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        head = tower.head_features(images)  # (B, 1280, 2, 3)
        conv = F.conv2d(head, tower.proj.weight[:, :, None, None], tower.proj.bias)
        dense = vlm.dense_features(images)
        pooled = vlm.encode_image(images)
    assert dense.shape == (2, 384, 2, 3)
    assert torch.allclose(dense, F.normalize(conv, dim=1), atol=1e-5)
    assert torch.allclose(pooled, F.normalize(conv.mean((2, 3)), dim=1), atol=1e-5)
    vlm.dense_scale = 2.0
    with torch.no_grad():
        assert vlm.dense_features(images).shape == (2, 384, 4, 6)


def test_contrastive_loss_against_naive_loop() -> None:
    from celseg.vlm.pretrain import contrastive_loss

    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(4, 5), dim=1), F.normalize(torch.randn(4, 5), dim=1)
    caps = torch.tensor([0, 1, 0, 2])
    scale = torch.tensor(2.0)
    loss = contrastive_loss(img, txt, scale, caps[:, None] == caps[None])
    s = float(scale.exp())
    total = 0.0
    for i in range(4):
        pos = [j for j in range(4) if caps[j] == caps[i]]
        li = torch.log_softmax(s * img[i] @ txt.T, 0)
        lt = torch.log_softmax(s * txt[i] @ img.T, 0)
        total += -sum(li[j] for j in pos) / len(pos) - sum(lt[j] for j in pos) / len(pos)
    assert abs(float(loss) - float(total) / 8) < 1e-5


def test_pretrain_cli_save_load(tmp_path) -> None:
    from celseg.cli import main
    from celseg.vlm.registry import load_vlm

    _write_captions(tmp_path / "data")
    out = tmp_path / "vlm"
    rc = main(["pretrain-vlm", "--data", str(tmp_path / "data"), "--out", str(out),
               "--steps", "2", "--batch-size", "4", "--no-progress"])
    assert rc == 0
    assert (out / "model.safetensors").is_file() and (out / "celseg_vlm.json").is_file()
    vlm = load_vlm(str(out))
    assert vlm.name.startswith("lit-minilm:")
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert vlm.encode_image(images).shape == (2, 384)
        assert vlm.dense_features(images).shape == (2, 384, 4, 4)
    # LiT: the text tower is MiniLM unchanged, no projection
    minilm = load_vlm("minilm")
    assert torch.allclose(vlm.encode_text(["red square"]), minilm.encode_text(["red square"]),
                          atol=1e-6)


def test_resume_continues_exactly(tmp_path, text) -> None:
    from safetensors.torch import load_file

    from celseg.vlm.pretrain import pretrain

    _write_captions(tmp_path / "data")
    cfg = VLMConfig(steps=4, batch_size=4, checkpoint_every=1, train_from_block=13)
    pretrain(tmp_path / "data", tmp_path / "full", cfg, progress=False, text=text)
    pretrain(tmp_path / "data", tmp_path / "part", cfg, progress=False, text=text, stop_after=2)
    assert not (tmp_path / "part" / "model.safetensors").exists()
    ckpt = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2
    summary = pretrain(tmp_path / "data", tmp_path / "part", cfg, resume=True, progress=False,
                       text=text)
    assert summary["steps"] == 4
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_registry_errors(tmp_path) -> None:
    from celseg.vlm.registry import load_vlm

    with pytest.raises(ModelLoadError, match="no-such-model"):
        load_vlm("no-such-model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="empty"):
        load_vlm(str(empty))
    lit = tmp_path / "lit_no_weights"
    lit.mkdir()
    (lit / "celseg_vlm.json").write_text('{"type": "lit"}')
    with pytest.raises(ModelLoadError, match="lit_no_weights"):
        load_vlm(str(lit))
    clip = tmp_path / "clip_no_weights"
    clip.mkdir()
    (clip / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="clip_no_weights"):
        load_vlm(str(clip))


def test_cli_reports_unknown_model(tmp_path, capsys) -> None:
    from celseg.cli import main

    (tmp_path / "classes.json").write_text(json.dumps(
        {"classes": [{"id": 0, "name": "red square"}]}))
    rc = main(["eval-vlm", "--vlm", "bogus-vlm", "--data", str(tmp_path)])
    assert rc == 2
    assert "bogus-vlm" in capsys.readouterr().err
