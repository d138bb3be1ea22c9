"""The head through frozen traces (celseg.models.traced_head) gives the eager head's outputs
bit for bit, only where it may be used, and never with stale weights."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from celseg.config import ModelConfig
from celseg.engine.predictor import Predictor
from celseg.models.build import build_segmenter

TINY = ModelConfig(pretrained=False, hidden_dim=32, mask_dim=32, num_queries=5, dec_layers=3,
                   nheads=2, dim_feedforward=64)
KEYS = ("pred_logits", "pred_masks", "class_embed")


def _model(**kw):
    torch.manual_seed(0)
    return build_segmenter(dataclasses.replace(TINY, **kw), 12).eval()


def _case():
    """A tiny model in eval mode, a 4-name vocabulary and one 64 px image."""
    return _model(), F.normalize(torch.randn(4, 12), dim=-1), torch.randn(1, 3, 64, 64)


def _eager(model, x, emb):
    traced, model.traced_head = model.traced_head, None
    try:
        return model(x, emb)
    finally:
        model.traced_head = traced


@pytest.mark.parametrize("conv", ["pointwise", "full"])
def test_traced_outputs_are_bit_identical(conv):
    model = _model(pixel_decoder_conv=conv)
    emb = F.normalize(torch.randn(4, 12), dim=-1)
    with torch.no_grad():
        for shape in ((1, 3, 64, 64), (2, 3, 96, 64)):
            x = torch.randn(*shape)
            first, second = model(x, emb), model(x, emb)  # traced on the second call
            eager = _eager(model, x, emb)
            for key in KEYS:
                assert torch.equal(first[key], eager[key]) and torch.equal(second[key], eager[key])
    assert len(model.traced_head.traces) == 2
    assert not any("traced" in k for k in model.state_dict())  # registered once, as before


def test_a_trace_holds_its_resize_plans_as_constants():
    """The attention masks' resize weights (MaskFeatures.resized_logits) are built once per
    size; a trace must take them as constants, not record how they were built (which it would
    then repeat on every call)."""
    model, emb, x = _case()
    with torch.no_grad():
        model(x, emb)
        model(x, emb)
    (trace,) = model.traced_head.traces.values()
    graph = str(trace.graph)
    assert "aten::index_select" in graph  # the rows the resize reads are gathered
    assert "aten::eye" not in graph and "aten::upsample_linear1d" not in graph
    # the memory levels' sine position codes are cached per size: constants too
    assert "aten::sin" not in graph and "aten::cos" not in graph
    assert all(isinstance(s, int) for key in model.transformer_decoder._positions
               for s in key[0])


def test_traced_only_after_a_shape_repeats_and_only_at_inference():
    model, emb, x = _case()
    with torch.no_grad():
        model(x, emb)
        assert model.traced_head.traces == {}  # seen once: eager
        with torch.inference_mode():
            model(x, emb)
            model(x, emb)
        assert model.traced_head.traces == {}  # inference-mode tensors are never captured
    model(x, emb)
    model(x, emb)
    assert model.traced_head.traces == {}  # autograd on: eager
    model.train()
    with torch.no_grad():
        model(x, emb)
        model(x, emb)
    assert model.traced_head.traces == {}  # training mode: eager
    model.eval()
    with torch.no_grad():
        model(x, emb)
    assert len(model.traced_head.traces) == 1


def test_new_weights_are_never_run_through_a_stale_trace():
    model, emb, x = _case()
    with torch.no_grad():
        model(x, emb)
        before = model(x, emb)["pred_masks"]
        for p in model.transformer_decoder.parameters():
            p.add_(0.05)  # as an optimizer step or load_state_dict would
        after = model(x, emb)["pred_masks"]
        after = model(x, emb)["pred_masks"]  # traced again for the new weights
        assert not torch.equal(before, after)
        assert torch.equal(after, _eager(model, x, emb)["pred_masks"])


def test_at_most_max_shapes_are_kept():
    model = _model()
    model.traced_head.max_shapes = 2
    emb = F.normalize(torch.randn(4, 12), dim=-1)
    with torch.no_grad():
        for size in (32, 64, 96):
            x = torch.randn(1, 3, size, size)
            model(x, emb)
            model(x, emb)
    assert len(model.traced_head.traces) == 2


def test_eval_trace_head_false_runs_eagerly(tmp_path, make_tiny_run):
    assert Predictor.from_checkpoint(make_tiny_run(tmp_path / "a")).model.traced_head is not None
    off = make_tiny_run(tmp_path / "b", "eval.trace_head=false")
    assert Predictor.from_checkpoint(off).model.traced_head is None


def test_a_failing_trace_leaves_the_head_eager(monkeypatch):
    model, emb, x = _case()

    def broken(*args, **kwargs):
        raise RuntimeError("no TorchScript here")

    monkeypatch.setattr(torch.jit, "trace", broken)
    with torch.no_grad():
        model(x, emb)
        with pytest.warns(UserWarning, match="could not be traced.*no TorchScript here"):
            out = model(x, emb)
        assert torch.equal(out["pred_masks"], _eager(model, x, emb)["pred_masks"])
        model(x, emb)  # no second attempt for the same shape


def test_copies_and_pickles_leave_the_traces_out(tmp_path):
    import copy

    model, emb, x = _case()
    with torch.no_grad():
        model(x, emb)
        model(x, emb)
        assert len(model.traced_head.traces) == 1
        twin = copy.deepcopy(model)
        assert twin.traced_head.traces == {} and len(model.traced_head.traces) == 1
        assert twin.traced_head.head.pixel_decoder is twin.pixel_decoder  # the copy's own
        torch.save(model, tmp_path / "model.pt")  # the whole module, traces left out
        loaded = torch.load(tmp_path / "model.pt", weights_only=False)
        assert torch.equal(loaded(x, emb)["pred_masks"], model(x, emb)["pred_masks"])
