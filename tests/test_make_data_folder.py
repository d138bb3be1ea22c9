"""``celseg make-data folder``: a user's folder of images and labels, checked pair by pair, laid
out, and walked through train / evaluate / predict as the README's "Train on your own data"
section does (with a few-step tiny training)."""

from __future__ import annotations

import json
import shlex
import shutil

import numpy as np
import pytest
from bad_input_tools import assert_refused, snapshot, tiny_training
from PIL import Image
from test_api import readme_blocks

from celseg.cli import main


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CELSEG_CACHE", str(tmp_path_factory.getbasetemp() / "text_cache"))


def _user_folder(root, synthetic_root):
    """The generated benchmark flattened into the README's layout: my_data/images, my_data/labels,
    my_data/classes.txt (the third class renamed "cat", the README's unseen class), photos/."""
    info = json.loads((synthetic_root / "classes.json").read_text())
    (root / "my_data" / "images").mkdir(parents=True)
    (root / "my_data" / "labels").mkdir()
    (root / "photos").mkdir()
    for split in ("train", "val"):
        for img in sorted((synthetic_root / "images" / split).iterdir()):
            shutil.copy(img, root / "my_data" / "images" / img.name)
            shutil.copy(synthetic_root / "annotations" / split / f"{img.stem}.png",
                        root / "my_data" / "labels" / f"{img.stem}.png")
    for img in sorted((synthetic_root / "images" / "val").iterdir())[:2]:
        shutil.copy(img, root / "photos" / img.name)
    names = [c["name"] for c in info["classes"]]
    names[2] = "cat"
    (root / "my_data" / "classes.txt").write_text("# my classes\n" + "\n".join(names) + "\n\n")
    return names


def _readme_walk() -> list[list[str]]:
    """The commands of the README's "Train on your own data" block, as argv lists."""
    (block,) = readme_blocks("Train on your own data", "bash")
    lines = block.replace("\\\n", " ").splitlines()
    return [shlex.split(line)[1:] for line in lines if line.startswith("celseg ")]


def test_readme_walk_from_a_folder_to_an_exported_model(tmp_path, synthetic_root, monkeypatch,
                                                        capsys):
    """The README's commands as written; only the training gets a tiny model and two steps."""
    monkeypatch.chdir(tmp_path)
    names = _user_folder(tmp_path, synthetic_root)
    walk = _readme_walk()
    assert [argv[0] for argv in walk] == ["make-data", "train", "evaluate", "predict", "export"]
    fast = ["--no-progress", "--set", *tiny_training(2, 2)]
    for argv in walk:
        assert main(argv + (fast if argv[0] == "train" else [])) == 0, argv
        if argv[0] == "make-data":
            printed = capsys.readouterr().out
    out = tmp_path / "data" / "mine"
    info = json.loads((out / "classes.json").read_text())
    assert [c["name"] for c in info["classes"]] == names
    assert [c["name"] for c in info["classes"] if c["split"] == "unseen"] == ["cat"]
    train = sorted(p.stem for p in (out / "images" / "train").iterdir())
    val = sorted(p.stem for p in (out / "images" / "val").iterdir())
    sources = sorted(p.stem for p in (tmp_path / "my_data" / "images").iterdir())
    assert len(val) == round(0.2 * len(sources)) and sorted(train + val) == sources
    for split, stems in (("train", train), ("val", val)):  # labels unchanged (ids, 255 ignore)
        for stem in stems:
            src = np.asarray(Image.open(tmp_path / "my_data" / "labels" / f"{stem}.png"))
            assert np.array_equal(np.asarray(Image.open(out / "annotations" / split /
                                                        f"{stem}.png")), src)
    # the printed pixel count of a class is the count over the source labels of that split
    labels = [np.asarray(Image.open(tmp_path / "my_data" / "labels" / f"{s}.png")) for s in val]
    row = next(line for line in printed.splitlines() if line.startswith(names[0] + " "))
    assert row.split()[-1].replace(",", "") == str(sum(int((m == 0).sum()) for m in labels))
    assert (tmp_path / "runs" / "mine" / "checkpoints" / "last.safetensors").is_file()
    shares = json.loads((tmp_path / "preds" / "shares.json").read_text())
    assert [r["labels"] for r in shares["images"]] == [
        f"{p.stem}.png" for p in sorted((tmp_path / "photos").iterdir())]
    assert (tmp_path / "my_model" / "model.safetensors").is_file()


def _pair(root, stem, label, image_size=None, rgb_label=False):
    (root / "im").mkdir(exist_ok=True)
    (root / "lab").mkdir(exist_ok=True)
    h, w = image_size or label.shape[:2]
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(root / "im" / f"{stem}.jpg")
    Image.fromarray(label.astype(np.uint8), "RGB" if rgb_label else None).save(
        root / "lab" / f"{stem}.png")


def _argv(root, classes="classes.txt", *extra):
    return ["make-data", "folder", "--images", str(root / "im"), "--labels", str(root / "lab"),
            "--classes", str(root / classes), "--out", str(root / "out"), "--quiet", *extra]


def test_colour_labels_map_through_the_palette_and_ignore_is_remapped(tmp_path):
    palette = [[200, 0, 0], [0, 200, 0], [0, 0, 200]]
    (tmp_path / "classes.json").write_text(json.dumps({"classes": [
        {"name": n, "color": c} for n, c in zip(["sky", "tree", "road"], palette, strict=True)]}))
    ids = np.array([[0, 1, 2, 2], [2, 1, 0, 0], [1, 1, 1, 2]])
    _pair(tmp_path, "a", np.asarray(palette, np.uint8)[ids], rgb_label=True)
    grey = np.array([[0, 9, 1, 2], [9, 9, 2, 0], [1, 1, 1, 1]])  # 9: the user's ignore value
    _pair(tmp_path, "b", grey)
    assert main(_argv(tmp_path, "classes.json", "--ignore", "9", "--val-share", "0.5")) == 0
    written = {p.stem: np.asarray(Image.open(p)) for p in (tmp_path / "out").rglob("*.png")
               if "annotations" in p.parts}
    assert np.array_equal(written["a"], ids)
    assert np.array_equal(written["b"], np.where(grey == 9, 255, grey))
    cfg = (tmp_path / "out" / "config.yaml").read_text()
    assert str((tmp_path / "out").resolve()) in cfg and "crop_size: 32" in cfg


@pytest.mark.parametrize("case, named", [
    ("missing_label", ["c.jpg", "no label"]),
    ("missing_image", ["d.png", "no image"]),
    ("size", ["b.png", "b.jpg", "8x6"]),
    ("bad_id", ["b.png", "value 7", "0..2"]),
    ("rgb_without_palette", ["b.png", "RGB", "colour"]),
    ("unknown_unseen", ["'cow'", "unknown class name"]),
    ("same_stem", ["b.jpg", "b.png", "share the name"]),
    ("bad_ignore", ["--ignore 1"]),
    ("bad_share", ["--val-share", "1.5"]),
])
def test_bad_folders_are_refused_naming_the_file(tmp_path, capsys, case, named):
    (tmp_path / "classes.txt").write_text("sky\ntree\nroad\n")
    _pair(tmp_path, "a", np.zeros((6, 8)))
    label = {"size": np.zeros((5, 8)), "bad_id": np.full((6, 8), 7),
             "rgb_without_palette": np.zeros((6, 8, 3))}.get(case, np.ones((6, 8)))
    _pair(tmp_path, "b", label, image_size=(6, 8), rgb_label=case == "rgb_without_palette")
    extra = {"unknown_unseen": ["--unseen", "cow"], "bad_ignore": ["--ignore", "1"],
             "bad_share": ["--val-share", "1.5"]}.get(case, [])
    if case == "missing_label":
        Image.new("RGB", (8, 6)).save(tmp_path / "im" / "c.jpg")
    if case == "missing_image":
        Image.new("L", (8, 6)).save(tmp_path / "lab" / "d.png")
    if case == "same_stem":
        Image.new("RGB", (8, 6)).save(tmp_path / "im" / "b.png")
    before = snapshot(tmp_path)
    assert_refused(main, _argv(tmp_path, "classes.txt", *extra), capsys, names=named,
                   watch=[tmp_path])
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_a_class_file_with_duplicates_or_nothing_is_refused(tmp_path, capsys):
    _pair(tmp_path, "a", np.zeros((6, 8)))
    for text, named in (("sky\nsky\n", ["duplicate", "sky"]), ("# none\n\n", ["no classes"])):
        (tmp_path / "classes.txt").write_text(text)
        assert_refused(main, _argv(tmp_path), capsys, names=[*named, "classes.txt"],
                       watch=[tmp_path])


def test_a_rerun_with_another_split_refuses_stale_images(tmp_path, capsys):
    (tmp_path / "classes.txt").write_text("sky\ntree\n")
    for stem in "abcd":
        _pair(tmp_path, stem, np.zeros((6, 8)))
    assert main(_argv(tmp_path, "classes.txt", "--val-share", "0.25")) == 0
    assert main(_argv(tmp_path, "classes.txt", "--val-share", "0.25")) == 0  # same: fine
    assert_refused(main, _argv(tmp_path, "classes.txt", "--val-share", "0.5"), capsys,
                   names=["earlier conversion"], watch=[tmp_path])
