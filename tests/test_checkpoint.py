"""Atomic checkpoints: weights round-trip, weights_only state, key/shape checks, RNG state."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from celseg.engine import checkpoint as ckpt
from celseg.engine.seeding import get_rng_state, set_rng_state
from celseg.errors import ModelLoadError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_weights_and_state_roundtrip(tmp_path) -> None:
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    state = {"step": 7, "optimizer": opt.state_dict(), "rng": [get_rng_state()]}
    ckpt.save_checkpoint(tmp_path, model, state, {"embed_dim": "4", "step": "7"})
    weights, state_path = ckpt.checkpoint_paths(tmp_path)
    assert weights.is_file() and state_path.is_file() and ckpt.has_checkpoint(tmp_path)
    assert not list(tmp_path.rglob("*.tmp"))  # written atomically: no temp file left behind

    other = _model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    meta = ckpt.load_weights(other, weights)
    assert meta["embed_dim"] == "4"
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    loaded = ckpt.load_state(tmp_path)  # weights_only=True inside
    assert loaded["step"] == 7
    opt2 = torch.optim.AdamW(other.parameters(), lr=0.1)
    opt2.load_state_dict(loaded["optimizer"])
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_load_weights_reports_mismatch(tmp_path) -> None:
    path = ckpt.save_checkpoint(tmp_path, _model(), {"step": 0}, {})
    wrong = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    with pytest.raises(ModelLoadError, match="shape"):
        ckpt.load_weights(wrong, path)
    with pytest.raises(ModelLoadError, match="not found"):
        ckpt.load_weights(wrong, tmp_path / "missing.safetensors")


def test_rng_state_restores_every_generator(tmp_path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = get_rng_state()
    torch.save(state, tmp_path / "rng.pt")
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_resolve_checkpoint_finds_config(tmp_path) -> None:
    run = tmp_path / "run"
    ckpt.save_checkpoint(run, _model(), {"step": 0}, {})
    with pytest.raises(ModelLoadError, match="config.yaml"):
        ckpt.resolve_checkpoint(run)
    (run / "config.yaml").write_text("{}\n")
    for given in (run, run / "checkpoints", run / "checkpoints" / ckpt.WEIGHTS_NAME):
        weights, config = ckpt.resolve_checkpoint(given)
        assert weights.name == ckpt.WEIGHTS_NAME and config == run / "config.yaml"
