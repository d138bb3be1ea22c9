"""The generated benchmark: layout, class table, determinism, coverage, label validity."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from celseg.cli import main
from celseg.data.classes import load_classes
from celseg.data.synth_shapes import inside_unit_shape, shape_mask
from celseg.data.synthetic import generate, render_caption, render_segmentation

COLORS = {"red", "yellow", "green", "blue"}
SHAPES = {"circle", "square", "triangle", "star"}


def _labels(root: Path, split: str) -> list[np.ndarray]:
    files = sorted((root / "annotations" / split).glob("*.png"))
    return [np.asarray(Image.open(f)) for f in files]


def test_class_table_is_zero_shot_meaningful(synthetic_root):
    info = load_classes(synthetic_root)
    assert info.num_classes >= 24
    assert 0.2 <= len(info.unseen_ids) / info.num_classes <= 0.3
    seen = [info.names[i] for i in info.seen_ids]
    for u in info.unseen_ids:
        words = set(info.names[u].split())
        # every unseen name shares a word (colour, shape or texture) with a seen name
        assert sum(bool(words & set(s.split())) for s in seen) >= 1, info.names[u]
        if info.kinds[u] == "thing":
            colour, shape = info.names[u].split()
            assert any(s.split()[0] == colour for s in seen if len(s.split()) == 2)
            assert f"red {shape}" in seen or f"blue {shape}" in seen or f"green {shape}" in seen
    assert {"thing", "stuff"} == set(info.kinds)
    # palette colours distinct: min pairwise L1 distance
    pal = info.palette.astype(int)
    d = np.abs(pal[:, None] - pal[None]).sum(-1) + 1000 * np.eye(len(pal), dtype=int)
    assert d.min() >= 40


def test_layout_and_label_validity(synthetic_root):
    info = load_classes(synthetic_root)
    for split, n in (("train", 12), ("val", 6)):
        imgs = sorted((synthetic_root / "images" / split).glob("*.png"))
        labs = sorted((synthetic_root / "annotations" / split).glob("*.png"))
        assert [p.name for p in imgs] == [p.name for p in labs] and len(imgs) == n
        for ip, lp in zip(imgs, labs, strict=True):
            im, lb = Image.open(ip), Image.open(lp)
            assert im.mode == "RGB" and lb.mode == "L" and im.size == lb.size == (64, 64)
            ids = np.unique(np.asarray(lb))
            assert ids.max() < info.num_classes  # fully labelled, every id valid
            things = [i for i in ids if info.kinds[i] == "thing"]
            assert 1 <= len(things) <= 6 and any(info.kinds[i] == "stuff" for i in ids)


def test_every_unseen_class_in_train_images(synthetic_root):
    info = load_classes(synthetic_root)
    present = set(np.unique(np.concatenate([lb.ravel() for lb in _labels(synthetic_root,
                                                                           "train")])).tolist())
    assert set(info.unseen_ids) <= present
    assert len(present) >= info.num_classes - 2  # nearly every class within 12 images


def test_captions_cover_all_classes_and_match_names(synthetic_root):
    info = load_classes(synthetic_root)
    lines = (synthetic_root / "captions" / "captions.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    assert len(recs) == 40
    assert {r["split"] for r in recs} == {"train", "val"}
    covered = set()
    for r in recs:
        assert (synthetic_root / "captions" / r["image"]).is_file()
        covered.update(r["class_ids"])
        for cid in r["class_ids"]:
            # every class shown is named in the caption (its noun phrase)
            assert info.names[cid] in r["caption"], (r, info.names[cid])
    assert covered == set(range(info.num_classes))


def test_caption_image_shows_its_classes():
    image, caption, ids = render_caption(seed=3, index=5, size=64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert len(ids) == 2 and caption


def test_deterministic_for_seed_and_differs_across_seeds():
    a = render_segmentation(7, "train", 3, 64)
    b = render_segmentation(7, "train", 3, 64)
    c = render_segmentation(8, "train", 3, 64)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_generate_twice_is_byte_identical(tmp_path):
    generate(tmp_path / "a", seed=1, n_train=3, n_val=2, size=48, n_captions=5)
    generate(tmp_path / "b", seed=1, n_train=3, n_val=2, size=48, n_captions=5)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_regenerating_clears_old_files_and_refuses_foreign_folder(tmp_path):
    out = tmp_path / "d"
    generate(out, seed=0, n_train=4, n_val=1, size=48, n_captions=2)
    generate(out, seed=0, n_train=2, n_val=1, size=48, n_captions=2)
    assert len(list((out / "images" / "train").iterdir())) == 2
    foreign = tmp_path / "f"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    from celseg.errors import DataError

    with pytest.raises(DataError, match="not empty"):
        generate(foreign, n_train=1, n_val=1, size=48, n_captions=1)


def test_shapes_against_analytic_areas():
    # a large unrotated object: pixel count close to the analytic area of each unit shape
    r = 40.0
    areas = {"circle": np.pi, "square": 1.7**2, "triangle": 3 * np.sqrt(3) / 4 * 1.25**2}
    for shape, unit_area in areas.items():
        _, _, mask = shape_mask(shape, 50.0, 50.0, r, 0.0, 100)
        assert abs(mask.sum() / (unit_area * r * r) - 1) < 0.03, shape
    # the star: centre inside, a point between two arms outside
    assert inside_unit_shape("star", np.array([0.0]), np.array([0.0]))[0]
    assert not inside_unit_shape("star", np.array([0.0]), np.array([-0.7]))[0]


def test_cli_make_data_and_show(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["make-data", "synthetic", "--out", str(out), "--train", "2", "--val", "2",
                 "--size", "48", "--captions", "3", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "images/s" in text and "unseen" in text
    sheet = tmp_path / "sheet.png"
    assert main(["show", str(out), "--n", "2", "--out", str(sheet)]) == 0
    assert Image.open(sheet).size[0] > 300
    assert main(["make-data", "no-such-set", "--out", str(tmp_path / "x")]) == 2


def test_output_does_not_depend_on_workers(tmp_path):
    """Two worker processes (the demo's) write the same files, byte for byte, as one."""
    sizes = dict(n_train=4, n_val=2, size=32, n_captions=6)
    for workers in (1, 2):
        generate(tmp_path / str(workers), seed=3, workers=workers, **sizes)
    one = sorted(p.relative_to(tmp_path / "1") for p in (tmp_path / "1").rglob("*") if p.is_file())
    two = sorted(p.relative_to(tmp_path / "2") for p in (tmp_path / "2").rglob("*") if p.is_file())
    assert one == two and len(one) > 12
    for rel in one:
        assert (tmp_path / "1" / rel).read_bytes() == (tmp_path / "2" / rel).read_bytes(), rel
