"""COCO-Stuff 164k converter: raw stuffthingmaps ids -> contiguous 0..170."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from celseg.data.classes import load_classes
from celseg.data.convert import CONVERTERS
from celseg.data.convert.coco_stuff import coco_stuff_lut
from celseg.errors import DataError

H, W = 9, 11
# COCO category ids never assigned (1-based); stuffthingmaps hold id - 1
UNUSED_RAW = [11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90]
UNSEEN_NAMES = ["cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors",
                "cardboard", "clouds", "grass", "playingfield", "river", "road", "tree",
                "wall-concrete"]
UNSEEN_IDS = [19, 23, 28, 29, 36, 51, 76, 88, 94, 112, 133, 136, 137, 157, 160]


def naive_map(raw: int) -> int:
    """Independent reference: count the used raw ids below ``raw``."""
    if raw == 255 or raw in UNUSED_RAW:
        return 255
    return raw - sum(1 for u in UNUSED_RAW if u < raw)


def test_lut_against_reference():
    lut = coco_stuff_lut()
    for raw in list(range(182)) + [255]:
        assert lut[raw] == naive_map(raw), raw
    assert (lut[182:255] == -1).all()
    assert lut[0] == 0  # person
    assert lut[181] == 170  # wood, the last stuff class


def test_raw_to_contiguous_names(tmp_path):
    make_coco(tmp_path / "raw")
    CONVERTERS["coco-stuff"](tmp_path / "raw", tmp_path / "out", progress=False)
    info = load_classes(tmp_path / "out")
    assert info.num_classes == 171 and len(info.seen_ids) == 156
    assert info.unseen_ids == UNSEEN_IDS
    assert [info.names[i] for i in info.unseen_ids] == UNSEEN_NAMES
    assert info.names[0] == "person" and info.kinds[0] == "thing"
    assert info.names[80] == "banner" and info.kinds[80] == "stuff"
    # raw 20 is COCO id 21 = cow; raw 91 is stuff id 92 = banner; raw 171 is wall-concrete (172)
    lut = coco_stuff_lut()
    assert info.names[lut[20]] == "cow"
    assert info.names[lut[91]] == "banner"
    assert info.names[lut[171]] == "wall-concrete"


def raw_map(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.array([0, 20, 24, 91, 171, 181, 11, 255])
    return values[rng.integers(0, len(values), size=(H, W))].astype(np.uint8)


def make_coco(root: Path, bad_value: int | None = None) -> None:
    for split, ids in (("train2017", ["000000000009", "000000000025"]),
                       ("val2017", ["000000000139"])):
        for k, i in enumerate(ids):
            img = root / "images" / split / f"{i}.jpg"
            img.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (W, H), (k * 40, 10, 200)).save(img)
            lab = raw_map(k + len(split))
            if bad_value is not None:
                lab[0, 0] = bad_value
            ann = root / "annotations" / split / f"{i}.png"
            ann.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(lab, mode="L").save(ann)


def test_convert_fixture(tmp_path):
    make_coco(tmp_path / "raw")
    out = tmp_path / "out"
    summary = CONVERTERS["coco-stuff"](tmp_path / "raw", out, progress=False)
    assert summary["splits"]["train"]["converted"] == 2
    assert summary["splits"]["val"]["converted"] == 1
    with Image.open(out / "annotations" / "train" / "000000000009.png") as im:
        got = np.asarray(im)
    want = np.vectorize(naive_map)(raw_map(0 + len("train2017")))
    np.testing.assert_array_equal(got, want)
    assert CONVERTERS["coco-stuff"](tmp_path / "raw", out, progress=False)["skipped"] == 3


def test_bad_value_and_missing_image(tmp_path):
    make_coco(tmp_path / "raw", bad_value=200)
    with pytest.raises(DataError, match=r"000000000009\.png.*200"):
        CONVERTERS["coco-stuff"](tmp_path / "raw", tmp_path / "out", progress=False)
    make_coco(tmp_path / "raw2")
    (tmp_path / "raw2" / "images" / "val2017" / "000000000139.jpg").unlink()
    with pytest.raises(DataError, match="000000000139.jpg"):
        CONVERTERS["coco-stuff"](tmp_path / "raw2", tmp_path / "out2", progress=False)


def test_output_loads_with_segmentation_dataset(tmp_path):
    dataset = pytest.importorskip("celseg.data.dataset")
    make_coco(tmp_path / "raw")
    CONVERTERS["coco-stuff"](tmp_path / "raw", tmp_path / "out", progress=False)
    ds = dataset.SegmentationDataset(tmp_path / "out", "val", view="zero_shot")
    _, label, _ = ds[0]
    want = np.vectorize(naive_map)(raw_map(len("val2017")))
    want[np.isin(want, UNSEEN_IDS)] = 255  # cow (19) hidden in the zero-shot view
    np.testing.assert_array_equal(label.numpy(), want)
