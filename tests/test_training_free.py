"""Training-free segmentation: ClearCLIP's last block on a tiny real-format CLIP against a
token-by-token reference, the labels of a VLM whose features are known, and the same path in
``celseg predict --vlm``, ``celseg.load(vlm=...)`` and ``celseg eval-vlm``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_vlm_clip import _write_tiny_clip

from celseg.cli import main
from celseg.vlm.base import VisionLanguageModel


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_clip")
    _write_tiny_clip(folder)
    return folder


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CELSEG_CACHE", str(tmp_path / "cache"))


def _naive_clearclip_block(layer, hidden: torch.Tensor) -> torch.Tensor:
    """ClearCLIP's last block one token and one head at a time: (N, width) -> (N, width)."""
    attn = layer.self_attn
    x = layer.layer_norm1(hidden)
    q, v = attn.q_proj(x), attn.v_proj(x)
    heads, n, width = attn.num_heads, x.shape[0], x.shape[1]
    d = width // heads
    out = torch.zeros(n, width)
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        for i in range(n):
            logits = torch.stack([q[i, cols] @ q[j, cols] / math.sqrt(d) for j in range(n)])
            w = torch.exp(logits - logits.max())
            w = w / w.sum()
            out[i, cols] = sum(w[j] * v[j, cols] for j in range(n))
    return attn.out_proj(out)  # no residual, no feed-forward network


@pytest.mark.parametrize("size", [(32, 32), (40, 72)])
def test_clearclip_features_match_a_token_loop(clip_dir, size) -> None:
    from celseg.vlm.registry import load_vlm
    from celseg.vlm.training_free import clearclip_features

    vlm = load_vlm(str(clip_dir))
    images = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    feats = clearclip_features(vlm, images)
    # reference: the model's own forward up to the last block, then the block by hand
    short = 32  # the tiny model's pretraining size; sides rounded to whole 8 px patches
    h, w = (max(8, round(s * short / min(size) / 8) * 8) for s in size)
    x = F.interpolate(images, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    x = (x - vlm.mean) / vlm.std
    with torch.no_grad():
        out = vlm.model.vision_model(pixel_values=x, output_hidden_states=True,
                                     interpolate_pos_encoding=True)
        tokens = _naive_clearclip_block(vlm.model.vision_model.encoder.layers[-1],
                                        out.hidden_states[-2][0])
        ref = vlm.model.visual_projection(vlm.model.vision_model.post_layernorm(tokens[1:]))
    ref = F.normalize(ref, dim=-1).T.reshape(1, -1, h // 8, w // 8)
    assert feats.shape == ref.shape
    assert torch.allclose(feats, ref, atol=1e-5), (feats - ref).abs().max()


class ColourVLM(VisionLanguageModel):
    """Dense feature of a pixel: its RGB, centred and normalised; text: a colour per name."""

    name = "colour"
    embed_dim = 3
    COLOURS = {"red": (1, -1, -1), "green": (-1, 1, -1), "blue": (-1, -1, 1)}

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def encode_text(self, names, templates=None):
        return F.normalize(torch.tensor([self.COLOURS[n] for n in names], dtype=torch.float), dim=1)

    def dense_features(self, images):
        return F.normalize(2 * F.avg_pool2d(images, 2) - 1, dim=1)  # half resolution


def test_labels_are_the_nearest_text_embedding_at_every_pixel(tmp_path) -> None:
    import celseg
    from celseg.api.model import Model
    from celseg.vlm.training_free import TrainingFreeSegmenter

    image = np.zeros((8, 12, 3), np.uint8)
    image[:, :4, 0] = image[:, 4:8, 1] = image[:, 8:, 2] = 230  # red | green | blue stripes
    model = Model(TrainingFreeSegmenter(ColourVLM()), "colour")
    seg = model.segment(image, ["blue", "red", "green"], probs=True)
    expected = np.zeros((8, 12), np.uint8)
    expected[:, :4], expected[:, 4:8], expected[:, 8:] = 1, 2, 0
    assert np.array_equal(seg.labels, expected)
    assert seg.probs.shape == (3, 8, 12) and np.allclose(seg.probs.sum(0), 1, atol=1e-5)
    assert seg.shares() == pytest.approx({"blue": 100 / 3, "red": 100 / 3, "green": 100 / 3})
    assert isinstance(seg, celseg.Segmentation) and model.protocol == "training-free"


def test_a_text_only_vlm_is_refused_by_name(tmp_path, capsys) -> None:
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    rc = main(["predict", "--vlm", "minilm", "--classes", "cat", "--out", str(tmp_path / "o"),
               str(tmp_path / "a.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "'minilm' is text-only" in err
    rc = main(["predict", "--classes", "cat", "--out", str(tmp_path / "o"),
               str(tmp_path / "a.png")])
    assert rc == 2 and "--vlm" in capsys.readouterr().err


def test_predict_api_and_eval_vlm_agree_with_the_tiny_clip(clip_dir, synthetic_root, tmp_path,
                                                          capsys) -> None:
    """Offline (HF_HUB_OFFLINE=1): predict --vlm without --ckpt writes the labels that
    celseg.load(vlm=...) gives, and eval-vlm's mIoU is that of those labels."""
    import celseg
    from celseg.data.classes import load_classes

    info = load_classes(synthetic_root)
    val = sorted((synthetic_root / "images" / "val").iterdir())[:3]
    names = list(info.names)
    assert main(["predict", "--vlm", str(clip_dir), "--classes", ",".join(names), "--device",
                 "cpu", "--out", str(tmp_path / "pred"), *map(str, val)]) == 0
    assert "training-free" in capsys.readouterr().out
    model = celseg.load(vlm=str(clip_dir), device="cpu")
    conf = np.zeros((len(names), len(names)), np.int64)
    for path in val:
        labels = model.segment(path, names).labels
        assert np.array_equal(np.asarray(Image.open(tmp_path / "pred" / f"{path.stem}.png")),
                              labels)
        gt = np.asarray(Image.open(synthetic_root / "annotations" / "val" / f"{path.stem}.png"))
        keep = gt != 255
        np.add.at(conf, (gt[keep].astype(int), labels[keep].astype(int)), 1)
    present = conf.sum(1) > 0
    iou = np.diag(conf) / (conf.sum(0) + conf.sum(1) - np.diag(conf)).clip(min=1)
    assert main(["eval-vlm", "--vlm", str(clip_dir), "--data", str(synthetic_root),
                 "--max-images", "3", "--no-classification", "--no-progress",
                 "--out", str(tmp_path / "eval.json")]) == 0
    dense = json.loads((tmp_path / "eval.json").read_text())["dense"]
    assert dense["miou_all"] == pytest.approx(100 * iou[present].mean(), abs=1e-6)
    assert {"miou_seen", "miou_unseen", "hiou"} <= set(dense)


def test_the_lit_text_tower_is_loaded_only_for_uncached_names(tmp_path, monkeypatch) -> None:
    import celseg.vlm.lit
    from celseg.vlm.cache import text_embeddings
    from celseg.vlm.lit import build_lit, load_lit, save_lit
    from celseg.vlm.minilm import LazyTextEncoder

    built = []

    def build():  # stands in for MiniLM: a fixed embedding per sentence
        built.append(1)
        return lambda sentences: F.normalize(torch.stack(
            [torch.randn(384, generator=torch.Generator().manual_seed(len(s)))
             for s in sentences]), dim=-1)

    monkeypatch.setattr(celseg.vlm.lit, "lazy_minilm", lambda: LazyTextEncoder(build))
    torch.manual_seed(0)
    folder = save_lit(build_lit(pretrained_backbone=False), tmp_path / "vlm")
    first = load_lit(folder)
    assert built == []  # loading the model does not build the text encoder
    emb = text_embeddings(first, ["cat", "dog"], cache_dir=tmp_path / "c")
    assert built == [1] and emb.shape == (2, 384)
    again = text_embeddings(load_lit(folder), ["cat", "dog"], cache_dir=tmp_path / "c")
    assert built == [1] and torch.equal(again, emb)  # a new model, names cached: not built
    text_embeddings(first, ["cow"], cache_dir=tmp_path / "c")
    assert built == [1]  # built once per encoder
