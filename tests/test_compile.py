"""``eval.compile_backbone``: the compiled backbone gives the eager model's outputs, and the
option reaches the models that evaluate, predict and serve load; a removed ``eval`` key of an
old run is skipped with a warning."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from celseg.cli import main
from celseg.config import RemovedKeyWarning, load_config
from celseg.engine.evaluate_checkpoint import overlay_eval_config
from celseg.engine.predictor import Predictor
from celseg.errors import CelsegError
from celseg.models.build import build_segmenter
from celseg.models.segmenter import has_cxx_compiler

TINY = ["model.pretrained=false", "model.hidden_dim=32", "model.mask_dim=32",
        "model.num_queries=4", "model.dec_layers=1", "model.nheads=2",
        "model.dim_feedforward=64"]

needs_compiler = pytest.mark.skipif(not has_cxx_compiler(),
                                    reason="torch.compile (inductor) needs a C++ compiler")


@needs_compiler
def test_compiled_backbone_matches_eager():
    torch.manual_seed(0)
    model = build_segmenter(load_config(None, TINY).model, 12).eval()
    x = torch.randn(2, 3, 64, 64)
    emb = F.normalize(torch.randn(5, 12), dim=-1)
    with torch.no_grad():
        eager = model(x, emb)
        model.compile_backbone()
        assert "forward_features" in vars(model.backbone)  # the instance's, not the class's
        compiled = model(x, emb)
    for key in ("pred_logits", "pred_masks"):
        assert torch.allclose(eager[key], compiled[key], atol=1e-4), key


def test_the_option_reaches_the_predictor(tmp_path, make_tiny_run, monkeypatch):
    calls = []
    monkeypatch.setattr("celseg.models.segmenter.Segmenter.compile_backbone",
                        lambda self: calls.append(type(self).__name__))
    plain = make_tiny_run(tmp_path / "plain")
    compiled = make_tiny_run(tmp_path / "compiled", "eval.compile_backbone=true")
    Predictor.from_checkpoint(plain)
    assert calls == []
    Predictor.from_checkpoint(compiled)
    assert calls == ["Segmenter"]
    Predictor.from_checkpoint(compiled, compile_backbone=False)  # the argument overrides
    Predictor.from_checkpoint(plain, compile_backbone=True)
    assert calls == ["Segmenter", "Segmenter"]


def test_predict_compile_backbone_flag(tmp_path, make_tiny_run, monkeypatch):
    monkeypatch.setenv("CELSEG_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr("celseg.models.segmenter.Segmenter.compile_backbone",
                        lambda self: calls.append(True))
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 48, 3), dtype=np.uint8)).save(image)
    run = make_tiny_run(tmp_path / "run")
    for flags, expected in (([], []), (["--compile-backbone"], [True])):
        calls.clear()
        assert main(["predict", "--ckpt", str(run), "--classes", "cat,dog", "--device", "cpu",
                     "--out", str(tmp_path / "pred"), "--overwrite", *flags, str(image)]) == 0
        assert calls == expected


def test_no_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    model = build_segmenter(load_config(None, TINY).model, 12).eval()
    with pytest.raises(CelsegError, match="needs a C\\+\\+ compiler"):
        model.compile_backbone()
    assert "forward_features" not in vars(model.backbone)  # nothing was changed


def test_an_old_run_with_eval_trace_head_still_loads(tmp_path, make_tiny_run, monkeypatch):
    """A run's config.yaml may hold ``eval.trace_head``, a key nothing reads any more: the run
    loads for predict and evaluate with a RemovedKeyWarning naming the key."""
    monkeypatch.setenv("CELSEG_CACHE", str(tmp_path / "cache"))
    run = make_tiny_run(tmp_path / "old")
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("eval:\n", "eval:\n  trace_head: true\n", 1))
    with pytest.warns(RemovedKeyWarning, match="'eval.trace_head'"):
        predictor = Predictor.from_checkpoint(run)
    assert predictor.segment(np.zeros((20, 24, 3), dtype=np.uint8), ["cat", "dog"]).shape == \
        (20, 24)
    with pytest.warns(RemovedKeyWarning, match="'eval.trace_head'"):
        assert overlay_eval_config(load_config(None), config).eval == load_config(None).eval
