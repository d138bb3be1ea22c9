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
