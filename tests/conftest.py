"""Shared fixtures: ``synthetic_root`` is a tiny generated benchmark (12 train / 6 val images at
64 px, 40 captions), made once per test session; treat it as read-only."""

from __future__ import annotations

import os
from pathlib import Path

# Tests never download: keep Hugging Face from asking the hub (it is unreachable on CI).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from celseg.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic") / "data"
    generate(root, seed=0, n_train=12, n_val=6, size=64, n_captions=40)
    return root


@pytest.fixture(scope="session")
def ov_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The second generated dataset (``make-data synthetic --variant ov``): 8 train / 4 val
    images at 64 px, 30 captions; read-only."""
    from celseg.cli import main

    root = tmp_path_factory.mktemp("ov") / "data"
    assert main(["make-data", "synthetic", "--variant", "ov", "--out", str(root), "--train", "8",
                 "--val", "4", "--size", "64", "--captions", "30", "--quiet"]) == 0
    return root


TINY_RUN = ["model.pretrained=false", "model.hidden_dim=32", "model.mask_dim=32",
            "model.num_queries=4", "model.dec_layers=1", "model.nheads=2",
            "model.dim_feedforward=64", "model.vlm=minilm"]


@pytest.fixture(scope="session")
def make_tiny_run():
    """``make_tiny_run(folder, *overrides)`` writes a run folder (config.yaml and checkpoint)
    holding an untrained tiny segmenter for 384-d MiniLM text embeddings, and returns it."""
    import torch

    from celseg.config import load_config, save_config
    from celseg.engine.checkpoint import save_checkpoint
    from celseg.models.build import build_segmenter

    def make(folder: Path, *overrides: str) -> Path:
        cfg = load_config(None, [*TINY_RUN, *overrides])
        torch.manual_seed(0)
        save_checkpoint(folder, build_segmenter(cfg.model, 384), {"step": 0},
                        {"embed_dim": "384"})
        save_config(cfg, folder / "config.yaml")
        return folder

    return make
