"""``celseg predict`` with a vocabulary that differs from the one the model was trained with."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from celseg.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, make_tiny_run):
    """A run folder holding an (untrained) tiny segmenter for 384-d MiniLM text embeddings."""
    return make_tiny_run(tmp_path_factory.mktemp("run"))


def test_predict_any_vocabulary(checkpoint, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CELSEG_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    paths = []
    for name, (h, w) in {"a": (70, 50), "b": (40, 96)}.items():  # odd sizes: padded inside
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    out = tmp_path / "pred"
    rc = main(["predict", "--ckpt", str(checkpoint), "--classes", "cat, dog,road",
               "--device", "cpu", "--out", str(out), *map(str, paths)])
    assert rc == 0
    for path, (h, w) in zip(paths, [(70, 50), (40, 96)], strict=True):
        label = np.asarray(Image.open(out / f"{path.stem}.png"))
        assert label.shape == (h, w) and label.dtype == np.uint8
        assert label.max() < 3  # indices into the 3 given names
        overlay = Image.open(out / f"{path.stem}_overlay.png")
        assert overlay.height >= h and overlay.width > 2 * w


def test_predict_errors_name_the_problem(checkpoint, tmp_path, capsys) -> None:
    rc = main(["predict", "--ckpt", str(checkpoint), "--classes", "cat", "--out",
               str(tmp_path), str(tmp_path / "missing.png")])
    assert rc == 2 and "missing.png" in capsys.readouterr().err
    rc = main(["predict", "--ckpt", str(checkpoint), "--classes", "cat,cat", "--out",
               str(tmp_path), str(tmp_path / "missing.png")])
    assert rc == 2 and "duplicate" in capsys.readouterr().err
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    rc = main(["predict", "--ckpt", str(tmp_path / "nope"), "--classes", "cat", "--out",
               str(tmp_path), str(tmp_path / "x.png")])
    assert rc == 2 and "nope" in capsys.readouterr().err
