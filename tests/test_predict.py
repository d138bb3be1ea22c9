"""``celseg predict``: any vocabulary; files, folders and globs, each with its own output name;
class shares as JSON; and a first image that does not wait for the text encoder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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


def _rgb(path, h=24, w=32, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_folders_globs_and_shared_stems(checkpoint, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CELSEG_CACHE", str(tmp_path / "cache"))
    one, two = _rgb(tmp_path / "a" / "x.png"), _rgb(tmp_path / "b" / "x.jpg", seed=1)
    _rgb(tmp_path / "a" / "y.png", seed=2)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    deep = _rgb(tmp_path / "c" / "d" / "z.png", seed=3)
    out = tmp_path / "pred"
    rc = main(["predict", "--ckpt", str(checkpoint), "--classes", "cat,dog", "--device", "cpu",
               str(tmp_path / "a"), str(two), str(tmp_path / "c" / "**" / "*.png"), str(one),
               "--out", str(out), "--shares"])
    assert rc == 0
    assert "4/4" in capsys.readouterr().err  # the progress bar over the images
    # a/x.png and b/x.jpg share the stem: numbered in the order given; a/x.png given twice
    assert sorted(p.name for p in out.glob("*.png") if "overlay" not in p.name) == [
        "x-1.png", "x-2.png", "y.png", "z.png"]
    shares = json.loads((out / "shares.json").read_text())
    assert shares["classes"] == ["cat", "dog"]
    by_image = {r["image"]: r for r in shares["images"]}
    assert set(by_image) == {str(one), str(tmp_path / "a" / "y.png"), str(two), str(deep)}
    assert by_image[str(two)]["labels"] == "x-2.png"
    for record in shares["images"]:
        label = np.asarray(Image.open(out / record["labels"]))
        expected = [100 * np.mean(label == i) for i in range(2)]
        assert np.allclose([record["shares"][n] for n in ("cat", "dog")], expected)


def test_output_names_stay_distinct() -> None:
    from celseg.api.inputs import output_names

    names = output_names(["a/x.png", "b/x.jpg", "x-1.png", "c/x.png", "y.png"])
    assert names == ["x-2", "x-3", "x-1", "x-4", "y"]
    assert len(set(names)) == len(names)


def test_cached_names_never_load_the_text_encoder(checkpoint, tmp_path) -> None:
    """A new process whose class embeddings are cached imports no transformers (the text
    encoder is built only for a name missing from the cache)."""
    from celseg.vlm.cache import text_embeddings
    from celseg.vlm.loading import load_vlm_cached

    text_embeddings(load_vlm_cached("minilm"), ["cat", "dog"], cache_dir=tmp_path / "cache")
    image = _rgb(tmp_path / "img.png")
    code = ("import sys\n"
            "from celseg.cli import main\n"
            f"rc = main(['predict', '--ckpt', {str(checkpoint)!r}, '--classes', 'cat,dog', "
            f"'--device', 'cpu', {str(image)!r}, '--out', {str(tmp_path / 'out')!r}])\n"
            "print(rc, sorted(m for m in ('transformers', 'scipy') if m in sys.modules))\n")
    env = {**os.environ, "CELSEG_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.stdout.split("\n")[-2] == "0 []", done.stderr[-3000:]
    assert (tmp_path / "out" / "img.png").is_file()
