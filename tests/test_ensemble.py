"""The out-of-vocabulary classifier and the geometric ensemble against naive loops, hand-computed
cases and the segmenter path written plainly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from celseg.config import EvalConfig
from celseg.engine.predictor import Predictor
from celseg.models.inference import (
    OOVBranch,
    SemanticInference,
    class_weights,
    geometric_ensemble,
    mask_pool,
    oov_probs,
    semantic_map,
)


def _naive_resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("pooling", ["soft", "binary"])
def test_mask_pool_against_per_pixel_loop(pooling):
    g = torch.Generator().manual_seed(1)
    b, q_n, d, h, w = 2, 3, 5, 3, 4
    feats = torch.randn(b, d, h, w, generator=g)
    masks = torch.randn(b, q_n, 6, 8, generator=g) * 3  # another resolution than the features
    got = mask_pool(feats, masks, pooling)
    small = _naive_resize_bilinear(masks, (h, w))
    for i in range(b):
        for q in range(q_n):
            acc, total = [0.0] * d, 0.0
            for y in range(h):
                for x in range(w):
                    logit = float(small[i, q, y, x])
                    m = 1 / (1 + math.exp(-logit)) if pooling == "soft" else float(logit > 0)
                    total += m
                    for k in range(d):
                        acc[k] += m * float(feats[i, k, y, x])
            mean = [a / max(total, 1e-6) for a in acc]
            norm = math.sqrt(sum(v * v for v in mean)) or 1.0
            for k in range(d):
                assert got[i, q, k].item() == pytest.approx(mean[k] / norm, abs=1e-5)


def test_binary_pool_of_empty_mask_is_zero():
    feats = torch.ones(1, 2, 2, 2)
    got = mask_pool(feats, torch.full((1, 1, 2, 2), -5.0), "binary")
    assert torch.equal(got, torch.zeros(1, 1, 2))


def test_geometric_ensemble_hand_computed():
    p_in = torch.tensor([[[0.5, 0.3, 0.2]]])
    p_out = torch.tensor([[[0.1, 0.2, 0.7]]])
    w = class_weights(3, [0, 1], alpha=0.4, beta=0.8)  # classes 0, 1 had labels
    assert w.tolist() == pytest.approx([0.4, 0.4, 0.8])
    got = geometric_ensemble(p_in, p_out, w)[0, 0]
    want = [0.5 ** 0.6 * 0.1 ** 0.4, 0.3 ** 0.6 * 0.2 ** 0.4, 0.2 ** 0.2 * 0.7 ** 0.8]
    torch.testing.assert_close(got, torch.tensor(want))


def test_oov_probs_are_a_scaled_softmax_of_cosines():
    pooled = F.normalize(torch.tensor([[[1.0, 1.0]]]), dim=-1)
    text = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    got = oov_probs(pooled, text, logit_scale=10.0)[0, 0]
    cos = [1 / math.sqrt(2), -1 / math.sqrt(2)]
    e = [math.exp(10 * c) for c in cos]
    assert got.tolist() == pytest.approx([e[0] / sum(e), e[1] / sum(e)], rel=1e-5)


class ConstVLM:
    """dense_features = fixed map; stands in for a VLM's image path."""

    def __init__(self, feats: torch.Tensor) -> None:
        self.feats = feats

    def dense_features(self, images):
        return self.feats


def _outputs(b=1, q=3, c=4, h=4, w=4, bg=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"pred_logits": torch.randn(b, q, c + int(bg), generator=g) * 2,
            "pred_masks": torch.randn(b, q, h, w, generator=g) * 3,
            "text_emb": torch.zeros(c, 2)}


@pytest.mark.parametrize("bg", [False, True])
def test_ensemble_hand_computed_end_to_end(bg):
    """The whole path, by hand: pooled -> p_out -> ensemble -> renormalise -> x (1 - void) ->
    sum over queries -> normalise over classes -> argmax."""
    out = _outputs(bg=bg)
    g = torch.Generator().manual_seed(3)
    feats = F.normalize(torch.randn(1, 2, 2, 2, generator=g), dim=1)
    text = F.normalize(torch.randn(4, 2, generator=g), dim=-1)
    weight = class_weights(4, [0, 1], 0.4, 0.8)
    path = SemanticInference(bg, "ensemble", OOVBranch(ConstVLM(feats), text, weight, "soft"))
    got = path.labels(out, None, (4, 4))["ensemble"][0]

    probs = out["pred_logits"][0].softmax(-1)
    p_in, void = (probs[:, :4], probs[:, 4]) if bg else (probs, torch.zeros(3))
    masks_small = F.interpolate(out["pred_masks"], size=(2, 2), mode="bilinear",
                                align_corners=False)[0].sigmoid()
    scores = torch.zeros(4, 4, 4)
    for q in range(3):
        pooled = (feats[0] * masks_small[q]).sum((1, 2)) / masks_small[q].sum()
        pooled = pooled / pooled.norm()
        logits = torch.tensor([100.0 * float(pooled @ text[c]) for c in range(4)])
        p_out = logits.softmax(0)
        p = torch.tensor([float(p_in[q, c]) ** (1 - float(weight[c]))
                          * float(p_out[c]) ** float(weight[c]) for c in range(4)])
        p = p / p.sum() * (1 - float(void[q]))
        scores += p[:, None, None] * out["pred_masks"][0, q].sigmoid()[None]
    want = (scores / scores.sum(0, keepdim=True)).argmax(0)
    assert torch.equal(got, want)


def test_alpha_beta_one_is_the_vlm_alone():
    out = _outputs(seed=5)
    g = torch.Generator().manual_seed(6)
    feats = F.normalize(torch.randn(1, 2, 4, 4, generator=g), dim=1)
    text = F.normalize(torch.randn(4, 2, generator=g), dim=-1)
    ones = SemanticInference(False, "ensemble",
                             OOVBranch(ConstVLM(feats), text, class_weights(4, [0], 1.0, 1.0)))
    vlm_alone = SemanticInference(False, "vlm",
                                  OOVBranch(ConstVLM(feats), text, class_weights(4, [0], 0.4, 0.8)))
    a = ones.scores(out)["ensemble"]
    b = vlm_alone.scores(out)["vlm"]
    # independent: p_out aggregated over the masks, without the segmenter's probabilities
    pooled = mask_pool(feats, out["pred_masks"])
    ref = torch.einsum("bqc,bqhw->bchw", oov_probs(pooled, text), out["pred_masks"].sigmoid())
    torch.testing.assert_close(a, ref)
    torch.testing.assert_close(b, ref)


def _plain_semantic_map(outputs, out_size, seen_ids=None, calibration=0.0, has_background=None):
    """The segmenter path written plainly: softmax, einsum, resize, normalise, argmax."""
    logits, masks = outputs["pred_logits"], outputs["pred_masks"]
    if has_background is None:
        has_background = logits.shape[-1] == outputs["text_emb"].shape[0] + 1
    probs = logits.softmax(-1)
    if has_background:
        probs = probs[..., :-1]
    probs = torch.einsum("bqc,bqhw->bchw", probs, masks.sigmoid())
    probs = F.interpolate(probs, size=tuple(out_size), mode="bilinear", align_corners=False)
    probs = probs / probs.sum(1, keepdim=True).clamp_min(1e-6)
    if seen_ids is not None and calibration:
        seen = torch.as_tensor(seen_ids, dtype=torch.long, device=probs.device)
        probs[:, seen] -= calibration
    return probs.argmax(1)


@pytest.mark.parametrize("bg,cal", [(False, 0.0), (True, 0.0), (False, 0.1), (True, 0.2)])
def test_ensemble_off_equals_the_plain_segmenter_path(bg, cal):
    for seed in range(5):
        out = _outputs(b=2, q=5, c=6, h=8, w=8, bg=bg, seed=seed)
        plain = _plain_semantic_map(out, (32, 32), [0, 2], cal, bg)
        path = SemanticInference(bg, "segmenter", seen_positions=[0, 2], calibration=cal)
        assert torch.equal(path.labels(out, None, (32, 32))["segmenter"], plain)
        assert torch.equal(semantic_map(out, (32, 32), [0, 2], cal, bg), plain)


# --- Predictor with a colour VLM: a name with no training label is found by the image path --

NAMES = ["red thing", "green thing", "blue thing"]
COLOURS = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])


class ColourVLM(torch.nn.Module):
    """dense feature = normalise(2*rgb - 1) at stride 4; text = the colour's direction."""

    name = "colour-vlm"
    embed_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def encode_text(self, names, templates=None):
        return F.normalize(COLOURS[[NAMES.index(n) for n in names]], dim=-1)

    def dense_features(self, images):
        return F.normalize(F.avg_pool2d(2 * images - 1, 4), dim=1)


class TwoMaskSegmenter(torch.nn.Module):
    """Query 0 covers the central square, query 1 the rest; both proposals are classified as
    red or green only (the segmenter never learnt 'blue thing')."""

    has_background = False

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images, text_emb):
        b, _, h, w = images.shape
        c = text_emb.shape[0]
        masks = torch.full((b, 2, h // 4, w // 4), -8.0)
        masks[:, 0, h // 16: 3 * h // 16, w // 16: 3 * w // 16] = 8.0
        masks[:, 1] = -masks[:, 0]
        logits = torch.full((b, 2, c), -4.0)
        logits[:, 0, 1] = 2.0  # the object: "green" says the segmenter
        logits[:, 1, 0] = 4.0  # the background: red
        return {"pred_logits": logits, "pred_masks": masks, "text_emb": text_emb}


def _blue_square_on_red(size=64):
    img = np.zeros((size, size, 3), dtype=np.uint8)
    img[..., 0] = 230
    img[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = (10, 20, 240)
    return img


def test_predictor_labels_an_object_whose_name_had_no_training_label(tmp_path):
    vlm = ColourVLM()
    image = _blue_square_on_red()
    center = (slice(24, 40), slice(24, 40))
    common = dict(labelled_names=["red thing", "green thing"], cache_dir=tmp_path)
    alone = Predictor(TwoMaskSegmenter(), vlm, EvalConfig(ensemble=False), vlm, **common)
    ensemble = Predictor(TwoMaskSegmenter(), vlm, EvalConfig(), vlm, **common)
    assert (alone.protocol, ensemble.protocol) == ("segmenter", "ensemble")
    seg = alone.segment(image, NAMES)
    ens = ensemble.segment(image, NAMES)
    assert (seg[center] == NAMES.index("green thing")).all()  # the segmenter alone is wrong
    assert (ens[center] == NAMES.index("blue thing")).all()  # the image path fixes it
    assert ens[0, 0] == NAMES.index("red thing") and ens.shape == image.shape[:2]
