"""The second generated dataset (``--variant ov``): same layout, a new world of class names,
some names shared with the first dataset, new shapes / colours / stuff actually drawn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from celseg.data.classes import load_classes
from celseg.data.synth_shapes import OV_SHAPES, inside_unit_shape
from celseg.data.synthetic import class_info, generate, render_segmentation
from celseg.errors import DataError

NEW_WORDS = {"hexagon", "cross", "heart", "ring", "purple", "orange", "white", "snow", "carpet",
             "cobblestone"}


def test_layout_matches_the_first_dataset(ov_root, synthetic_root):
    for sub in ("images/train", "images/val", "annotations/train", "annotations/val",
                "captions/images"):
        assert (ov_root / sub).is_dir() and (synthetic_root / sub).is_dir()
    info = load_classes(ov_root)
    for split, n in (("train", 8), ("val", 4)):
        imgs = sorted((ov_root / "images" / split).glob("*.png"))
        labs = sorted((ov_root / "annotations" / split).glob("*.png"))
        assert [p.name for p in imgs] == [p.name for p in labs] and len(imgs) == n
        for lp in labs:
            lab = Image.open(lp)
            assert lab.mode == "L" and np.asarray(lab).max() < info.num_classes
    records = [json.loads(x) for x in (ov_root / "captions" / "captions.jsonl").read_text()
               .splitlines()]
    assert len(records) == 30 and {r["split"] for r in records} == {"train", "val"}


def test_names_are_a_new_world_with_some_overlap(ov_root, synthetic_root):
    first, ov = load_classes(synthetic_root), load_classes(ov_root)
    assert ov.dataset_name != first.dataset_name
    shared = set(ov.names) & set(first.names)
    new = set(ov.names) - set(first.names)
    assert 4 <= len(shared) <= len(ov.names) // 2 and len(new) >= len(ov.names) // 2
    for name in new:  # a new name is new because it holds a new word, or a new combination
        assert set(name.split()) & NEW_WORDS or len(name.split()) == 2
    assert {w for n in new for w in n.split()} >= NEW_WORDS
    # "seen" marks exactly the shared names, so seen / unseen scores are shared / new ones
    assert {ov.names[i] for i in ov.seen_ids} == shared
    assert {"thing", "stuff"} == set(ov.kinds)
    pal = ov.palette.astype(int)
    assert len({tuple(p) for p in pal}) == len(pal)


def test_every_class_appears_and_new_ones_are_drawn(ov_root):
    info = load_classes(ov_root)
    present = set()
    for split in ("train", "val"):
        for p in (ov_root / "annotations" / split).glob("*.png"):
            present |= set(np.unique(np.asarray(Image.open(p))).tolist())
    stuff = {i for i in range(info.num_classes) if info.kinds[i] == "stuff"}
    assert stuff <= present  # the stuff deck covers all 6 in 12 images
    captions = [json.loads(x) for x in (ov_root / "captions" / "captions.jsonl").read_text()
                .splitlines()]
    assert all(info.names[c] in r["caption"] or info.kinds[c] == "stuff"
               for r in captions for c in r["class_ids"])


def test_new_shapes_are_distinct_and_of_similar_area():
    t = (np.arange(600) + 0.5) / 600 * 3 - 1.5
    u, v = np.meshgrid(t, t)
    masks = {s: inside_unit_shape(s, u, v) for s in ("circle", *OV_SHAPES)}
    for s, m in masks.items():
        assert 2.3 <= m.mean() * 9 <= 3.6, s  # area in units of the unit square (circle: pi)
    assert not masks["ring"][300, 300] and masks["circle"][300, 300]  # the ring has a hole
    for a in OV_SHAPES:
        for b in OV_SHAPES:
            if a < b:
                assert (masks[a] ^ masks[b]).mean() > 0.05, (a, b)


def test_variant_differs_from_first_world_and_unknown_is_refused(tmp_path):
    a, la = render_segmentation(0, "train", 3, 64)
    b, lb = render_segmentation(0, "train", 3, 64, "ov")
    assert not np.array_equal(a, b)
    assert class_info("ov").num_classes == 24
    with pytest.raises(DataError, match="unknown synthetic variant"):
        generate(tmp_path / "x", n_train=1, n_val=1, n_captions=0, variant="nope")
    assert not (tmp_path / "x").exists()
