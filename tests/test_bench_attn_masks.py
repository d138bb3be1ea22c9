"""The decoder against its earlier form (``bench_attn_masks.stride4_decoder``: every
prediction's stride-4 masks on its own, the attention masks resized from them): the same
predictions up to float rounding, at inference and in training, gradients included."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_attn_masks  # noqa: E402

from celseg.ablation.demo import config_path  # noqa: E402
from celseg.config import load_config  # noqa: E402
from celseg.models.mask_features import MaskFeatures  # noqa: E402
from celseg.models.transformer_decoder import TransformerDecoder  # noqa: E402


def test_both_decoder_forms_agree_and_are_timed():
    rows = bench_attn_masks.measure(None, repeats=1, settings=((64, 1),),
                                    train_settings=((64, 2),))
    assert [r["pass"] for r in rows] == ["inference", "training"]
    assert rows[0]["mask_pixels"] == 16 * 16 * 16
    # every prediction of batch 2: one per decoder layer of the shipped model, and the first
    layers = load_config(config_path("synthetic.yaml")).model.dec_layers
    assert rows[1]["mask_pixels"] == (layers + 1) * 2 * 16 * 16 * 16
    for row in rows:
        assert row["max_abs_diff"] < 1e-3
        assert row["before_ms"] > 0 and row["now_ms"] > 0


def _features(kind: str, g: torch.Generator):
    fine = torch.randn(2, 24, 32, 32, generator=g, requires_grad=True)
    if kind == "plain":
        return fine, MaskFeatures(fine[:, :16])
    coarse = torch.randn(2, 24, 16, 16, generator=g)
    proj = torch.nn.Conv2d(24, 16, 1)
    return fine, MaskFeatures(fine, coarse, proj)  # as the `pointwise` decoder has it


@pytest.mark.parametrize("kind", ["plain", "factored"])
@pytest.mark.parametrize("masked", [True, False])
def test_training_predictions_and_gradients_match_the_earlier_form(kind, masked):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    decoder = TransformerDecoder(hidden_dim=32, mask_dim=16, num_queries=5, num_layers=4,
                                 nheads=4, dim_feedforward=64, masked_attention=masked).train()
    memory = [torch.randn(2, 32, s, s, generator=g) for s in (4, 8, 16)]
    fine, mask_features = _features(kind, g)
    results = []
    for form in (bench_attn_masks.stride4_decoder, TransformerDecoder.forward):
        preds = form(decoder, memory, mask_features)
        loss = sum((p["pred_masks"] ** 2).mean() + p["class_feat"].sum() for p in preds)
        grads = torch.autograd.grad(loss, [fine, *decoder.parameters()], allow_unused=True)
        results.append((preds, grads))
    (before, g_before), (now, g_now) = results
    assert len(before) == len(now) == 5
    for a, b in zip(before, now, strict=True):
        for key in ("pred_masks", "class_feat", "mask_embed"):
            torch.testing.assert_close(b[key], a[key], atol=1e-4, rtol=1e-4)
    for a, b in zip(g_before, g_now, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-3)


def test_the_training_step_rows_time_both_decoders_against_the_backbone():
    rows = bench_attn_masks.step_rows(repeats=1, size=64, batch=2)
    assert [r["model"] for r in rows] == list(bench_attn_masks.VARIANTS)
    for row in rows:
        assert min(row["backbone_ms"], row["before_ms"], row["now_ms"]) > 0
        assert row["now_ratio"] == row["now_ms"] / row["backbone_ms"]
