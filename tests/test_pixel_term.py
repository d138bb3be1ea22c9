"""The ensemble's per-pixel term: S(c, x) * D(c, x)^lambda, D the VLM's own dense classification,
against per-pixel loops and a hand-built case where one proposal spans two classes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from celseg.config import EvalConfig
from celseg.models.inference import (
    OOVBranch,
    SemanticInference,
    aggregate,
    class_weights,
    pixel_probs,
)


class ConstVLM:
    """dense_features = a fixed map; counts its calls."""

    def __init__(self, feats: torch.Tensor) -> None:
        self.feats, self.calls = feats, 0

    def dense_features(self, images):
        self.calls += 1
        return self.feats


def test_pixel_probs_against_a_per_pixel_loop():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 3, 2, 2, generator=g) * 2  # not unit: pixel_probs normalises
    text = F.normalize(torch.randn(4, 3, generator=g), dim=-1)
    got = pixel_probs(feats, text, (2, 2), logit_scale=7.0)
    for y in range(2):
        for x in range(2):
            f = feats[0, :, y, x]
            cos = [float(f @ text[c]) / float(f.norm()) for c in range(4)]
            e = [math.exp(7.0 * v) for v in cos]
            assert got[0, :, y, x].tolist() == pytest.approx([v / sum(e) for v in e], rel=1e-5)
    # resized bilinearly to the masks' size
    big = pixel_probs(feats, text, (4, 4), logit_scale=7.0)
    torch.testing.assert_close(big, F.interpolate(got, size=(4, 4), mode="bilinear",
                                                  align_corners=False))


def _two_region_case():
    """One proposal covers the whole 2 x 4 image; the VLM's left half looks like class 0, its
    right half like class 1; the proposal's own scores favour class 0."""
    text = torch.eye(2)
    feats = torch.zeros(1, 2, 2, 4)
    feats[0, 0, :, :2] = 1.0
    feats[0, 1, :, 2:] = 1.0
    outputs = {"pred_logits": torch.tensor([[[3.0, 0.0]]]),
               "pred_masks": torch.full((1, 1, 2, 4), 6.0)}
    return outputs, feats, text


def test_pixel_term_splits_a_proposal_the_vlm_sees_as_two_classes():
    outputs, feats, text = _two_region_case()
    weight = class_weights(2, [0], 0.2, 0.8)
    plain = SemanticInference(False, "ensemble", OOVBranch(ConstVLM(feats), text, weight))
    fused = SemanticInference(False, "ensemble",
                              OOVBranch(ConstVLM(feats), text, weight, pixel_weight=0.5,
                                        logit_scale=10.0))
    assert plain.labels(outputs, None, (2, 4))["ensemble"].unique().tolist() == [0]
    labels = fused.labels(outputs, None, (2, 4))["ensemble"][0]
    assert labels[:, :2].eq(0).all() and labels[:, 2:].eq(1).all()


@pytest.mark.parametrize("lam", [0.0, 0.1, 0.5])
def test_pixel_term_scores_by_hand(lam):
    g = torch.Generator().manual_seed(2)
    outputs = {"pred_logits": torch.randn(1, 3, 4, generator=g),
               "pred_masks": torch.randn(1, 3, 4, 4, generator=g) * 3}
    feats = torch.randn(1, 2, 2, 2, generator=g)
    text = F.normalize(torch.randn(4, 2, generator=g), dim=-1)
    weight = class_weights(4, [0, 1], 0.2, 0.8)
    vlm = ConstVLM(feats)
    path = SemanticInference(False, "ensemble", OOVBranch(vlm, text, weight, pixel_weight=lam))
    got = path.scores(outputs, None, ("ensemble", "vlm", "segmenter"))
    assert vlm.calls == 1  # one dense map for the pooling and the pixel term
    plain = SemanticInference(False, "ensemble", OOVBranch(ConstVLM(feats), text, weight))
    base = plain.scores(outputs, None, ("ensemble", "vlm", "segmenter"))
    small = F.normalize(feats[0], dim=0)
    d = torch.zeros(4, 2, 2)
    for y in range(2):
        for x in range(2):
            d[:, y, x] = (100.0 * text @ small[:, y, x]).softmax(0)
    d = F.interpolate(d[None], size=(4, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(got["ensemble"], base["ensemble"] * d.clamp_min(1e-6) ** lam)
    # the other protocols are untouched
    torch.testing.assert_close(got["vlm"], base["vlm"])
    torch.testing.assert_close(got["segmenter"], aggregate(outputs["pred_logits"].softmax(-1),
                                                           outputs["pred_masks"]))


def test_pixel_weight_is_validated():
    from celseg.config import Config, ConfigError, apply_overrides

    assert EvalConfig().ensemble_pixel_weight == 0.0
    cfg = apply_overrides(Config(), ["eval.ensemble_pixel_weight=0.1"])
    assert cfg.eval.ensemble_pixel_weight == 0.1
    with pytest.raises(ConfigError, match="ensemble_pixel_weight"):
        apply_overrides(Config(), ["eval.ensemble_pixel_weight=2"])


def test_pixel_term_reads_the_shared_towers_map():
    """With a shared backbone the outputs carry ``vlm_dense``: the term reads it, no VLM needed,
    and scores as a separate VLM returning the same map."""
    outputs, feats, text = _two_region_case()
    weight = class_weights(2, [0], 0.2, 0.8)
    shared = SemanticInference(False, "ensemble",
                               OOVBranch(None, text, weight, pixel_weight=0.5, logit_scale=10.0))
    separate = SemanticInference(False, "ensemble",
                                 OOVBranch(ConstVLM(feats), text, weight, pixel_weight=0.5,
                                           logit_scale=10.0))
    got = shared.scores({**outputs, "vlm_dense": feats})["ensemble"]
    torch.testing.assert_close(got, separate.scores(outputs)["ensemble"])
    labels = shared.labels({**outputs, "vlm_dense": feats}, None, (2, 4))["ensemble"][0]
    assert labels[:, :2].eq(0).all() and labels[:, 2:].eq(1).all()
