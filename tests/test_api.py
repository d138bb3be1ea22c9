"""The Python API: the README's quick start runs unchanged, ``segment`` takes every image form
to the same labels, results save without replacing what the user had, and ``import celseg``
stays light."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import celseg
from celseg.cli import main
from celseg.errors import CelsegError, DataError, OutputError

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_blocks(section: str, language: str) -> list[str]:
    """The ``language`` code blocks of the README section titled ``section``."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start: end if end != -1 else len(text)]
    return re.findall(rf"```{language}\n(.*?)```", body, flags=re.S)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CELSEG_CACHE", str(tmp_path_factory.getbasetemp() / "text_cache"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, make_tiny_run):
    """An exported tiny (untrained) model."""
    folder = tmp_path_factory.mktemp("api")
    run = make_tiny_run(folder / "run")
    assert main(["export", str(run), str(folder / "my_model")]) == 0
    return folder / "my_model"


def test_readme_python_api_runs_unchanged(exported, tmp_path, monkeypatch) -> None:
    """The README's blocks with the files they name made here: an exported model at
    ``my_model``, the default VLM (random weights) at ``runs/demo/vlm``, and ``photo.jpg``."""
    import shutil

    import torch

    from celseg.vlm.lit import build_lit, save_lit

    blocks = readme_blocks("Python API", "python")
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    shutil.copytree(exported, tmp_path / "my_model")
    torch.manual_seed(0)
    save_lit(build_lit(pretrained_backbone=False), tmp_path / "runs" / "demo" / "vlm")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save("photo.jpg")
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    for path in ("out/photo.png", "out/photo_overlay.png", "photo_overlay.png",
                 "out_training_free/photo.png"):
        assert (tmp_path / path).is_file(), path
    labels = np.asarray(Image.open(tmp_path / "out" / "photo.png"))
    assert labels.shape == (48, 64) and labels.max() < 3


def test_every_image_form_gives_the_same_labels(exported, tmp_path) -> None:
    model = celseg.load(exported, device="cpu")
    rgb = np.random.default_rng(1).integers(0, 255, (30, 44, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    names = ["cat", "dog", "road"]
    reference = model.segment(tmp_path / "x.png", names)
    assert reference.name == "x" and reference.probs is None
    rgba = np.concatenate([rgb, np.full((30, 44, 1), 7, np.uint8)], axis=2)
    forms = [str(tmp_path / "x.png"), Image.fromarray(rgb), rgb, rgba, rgb / 255.0]
    for form in forms:
        assert np.array_equal(model.segment(form, names).labels, reference.labels)
    many = model.segment(forms[:2], "cat, dog,road")
    assert [np.array_equal(s.labels, reference.labels) for s in many] == [True, True]
    shares = reference.shares()
    expected = [100 * np.mean(reference.labels == i) for i in range(3)]
    assert list(shares) == names and np.allclose(list(shares.values()), expected)


@pytest.mark.parametrize("image, names, message", [
    (np.zeros((4, 4, 2), np.uint8), ["a"], "(4, 4, 2)"),
    (np.full((4, 4, 3), 2.0), ["a"], "[2.0, 2.0]"),
    (np.zeros((4, 4, 3), np.int32), ["a"], "int32"),
    (12, ["a"], "int"),
    ("no/such/photo.png", ["a"], "no/such/photo.png"),
    (np.zeros((4, 4, 3), np.uint8), ["a", "a"], "duplicate"),
    (np.zeros((4, 4, 3), np.uint8), ["a,b"], "'a,b'"),
    (np.zeros((4, 4, 3), np.uint8), [], "no class names"),
])
def test_bad_images_and_names_are_named(exported, image, names, message) -> None:
    model = celseg.load(exported, device="cpu")
    with pytest.raises(DataError) as info:
        model.segment(image, names)
    assert message in str(info.value)


def test_save_never_replaces_the_users_files(exported, tmp_path) -> None:
    model = celseg.load(exported, device="cpu")
    source = tmp_path / "photo.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(source)
    seg = model.segment(source, ["cat", "dog"])
    original = source.read_bytes()
    with pytest.raises(OutputError, match="inputs"):
        seg.save(tmp_path)  # would write photo.png over the source image
    assert source.read_bytes() == original
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "photo_overlay.png").write_bytes(b"mine")
    with pytest.raises(OutputError, match="--overwrite"):
        seg.save(tmp_path / "out")
    assert (tmp_path / "out" / "photo_overlay.png").read_bytes() == b"mine"
    labels, overlay = seg.save(tmp_path / "out", overwrite=True)
    assert np.array_equal(np.asarray(Image.open(labels)), seg.labels)
    assert Image.open(overlay).width > 2 * 16
    assert seg.save(tmp_path / "out") == (labels, overlay)  # celseg's own files: replaced


def test_load_and_its_arguments_name_what_is_wrong(exported, tmp_path) -> None:
    with pytest.raises(CelsegError, match="vlm="):
        celseg.load()
    with pytest.raises(CelsegError, match="no_such_run"):
        celseg.load(tmp_path / "no_such_run")
    with pytest.raises(CelsegError, match="text-only"):
        celseg.load(vlm="minilm")
    with pytest.raises(DataError, match="max_size.*-1"):
        celseg.load(exported, device="cpu").segment(np.zeros((4, 4, 3), np.uint8), ["a"],
                                                    max_size=-1)


def test_import_celseg_does_not_import_torch() -> None:
    code = ("import sys, celseg; assert callable(celseg.load); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_exif_orientation_is_applied_as_on_the_page(exported, tmp_path) -> None:
    """A photo stored sideways (EXIF orientation 6) is segmented as a viewer shows it, as
    ``celseg serve`` does."""
    img = Image.fromarray(np.zeros((20, 50, 3), np.uint8))  # stored 50 wide, 20 high
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "photo.jpg", exif=exif)
    seg = celseg.load(exported, device="cpu").segment(tmp_path / "photo.jpg", ["cat", "dog"])
    assert seg.labels.shape == (50, 20) and seg.image.shape == (50, 20, 3)
