"""``celseg export``: a run becomes a folder that still loads after it is moved and the run and
its VLM folder are gone, with the network off; a Hub id loads from the local cache offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_input_tools import assert_refused
from PIL import Image

from celseg.cli import main

CLASSES = ["cat", "dog", "road"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CELSEG_CACHE", str(tmp_path_factory.getbasetemp() / "text_cache"))


@pytest.fixture
def lit_run(tmp_path, make_tiny_run, synthetic_root):
    """A tiny run whose model.vlm is a (random) LiT folder, with a metrics.json."""
    from celseg.vlm.lit import build_lit, save_lit

    torch.manual_seed(0)
    vlm = save_lit(build_lit(pretrained_backbone=False), tmp_path / "work" / "vlm")
    run = make_tiny_run(tmp_path / "work" / "run", f"model.vlm={vlm}",
                        f"data.root={synthetic_root}")
    (run / "metrics.json").write_text(json.dumps({"miou_seen": 40.0, "miou_unseen": 20.0,
                                                  "hiou": 26.6667}))
    return run


def _image(path: Path) -> Path:
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


def test_export_moves_and_loads_offline(lit_run, tmp_path, synthetic_root, monkeypatch) -> None:
    import celseg

    photo = _image(tmp_path / "photo.png")
    before = celseg.load(lit_run, device="cpu").segment(photo, CLASSES, probs=True)
    assert main(["export", str(lit_run), str(tmp_path / "exported"), "--license",
                 "apache-2.0"]) == 0
    moved = tmp_path / "elsewhere" / "shapes-model"
    moved.parent.mkdir()
    shutil.move(tmp_path / "exported", moved)
    shutil.rmtree(tmp_path / "work")  # the run and its VLM folder are gone
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = celseg.load(moved, device="cpu")
    after = model.segment(photo, CLASSES, probs=True)
    assert model.protocol == "ensemble"  # the copied VLM's image path is used
    assert np.array_equal(after.labels, before.labels)
    assert np.allclose(after.probs, before.probs, atol=1e-6)

    vocab = json.loads((moved / "vocabulary.json").read_text())
    info = json.loads((synthetic_root / "classes.json").read_text())["classes"]
    assert vocab["names"] == [c["name"] for c in info]
    card = (moved / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\n")
    assert "| hIoU | 26.67 |" in card and "celseg export" in card
    config = (moved / "config.yaml").read_text()
    assert "vlm: vlm" in config and str(tmp_path / "work") not in config
    assert main(["predict", "--ckpt", str(moved), "--classes", ",".join(CLASSES), "--device",
                 "cpu", str(photo), "--out", str(tmp_path / "pred")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "pred" / "photo.png")), after.labels)


def _hub_snapshot(cache: Path, repo: str, folder: Path) -> None:
    """The local Hugging Face cache layout of ``repo`` at one commit, holding ``folder``."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / commit)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)


def test_a_hub_id_loads_from_the_local_cache_offline(make_tiny_run, tmp_path, monkeypatch):
    import huggingface_hub.constants

    import celseg
    from celseg.errors import ModelLoadError

    run = make_tiny_run(tmp_path / "run")
    assert main(["export", str(run), str(tmp_path / "exported")]) == 0
    _hub_snapshot(tmp_path / "hub", "someone/tiny-celseg", tmp_path / "exported")
    # what HF_HUB_OFFLINE=1 HF_HUB_CACHE=... set when huggingface_hub is imported
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    seg = celseg.load("someone/tiny-celseg", device="cpu").segment(
        _image(tmp_path / "photo.png"), ["a", "b"])
    assert seg.labels.shape == (40, 56) and seg.labels.max() < 2
    with pytest.raises(ModelLoadError, match="'someone/not-cached'.*HF_HUB_OFFLINE=1"):
        celseg.load("someone/not-cached")


def test_export_refuses_to_write_over_the_run_or_a_foreign_folder(lit_run, tmp_path, capsys):
    assert_refused(main, ["export", str(lit_run), str(lit_run), "--overwrite"], capsys,
                   names=["config.yaml", "inputs"], watch=[tmp_path])
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert_refused(main, ["export", str(lit_run), str(foreign)], capsys,
                   names=[str(foreign), "--overwrite"], watch=[tmp_path])
    assert_refused(main, ["export", str(lit_run), str(tmp_path / "x"), "--license", "MIT licence"],
                   capsys, names=["--license", "MIT licence"], watch=[tmp_path])


def test_export_refuses_a_run_whose_vlm_folder_is_gone(lit_run, tmp_path, capsys):
    shutil.rmtree(tmp_path / "work" / "vlm")
    assert_refused(main, ["export", str(lit_run), str(tmp_path / "out")], capsys,
                   names=[str(tmp_path / "work" / "vlm")], watch=[tmp_path])
    assert not (tmp_path / "out").exists()
