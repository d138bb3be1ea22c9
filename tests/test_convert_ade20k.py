"""ADE20K converters: SceneParsing-150 and ADE20K-Full (RGB-encoded and 16-bit prepared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from celseg.data.classes import load_classes
from celseg.data.convert import CONVERTERS
from celseg.errors import DataError

H, W = 8, 9


def ade150_raw(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 151, size=(H, W)).astype(np.uint8)


def make_ade150(root: Path) -> None:
    base = root / "ADEChallengeData2016"
    for split, prefix, n in (("training", "ADE_train", 2), ("validation", "ADE_val", 1)):
        for k in range(n):
            name = f"{prefix}_{k + 1:08d}"
            (base / "images" / split).mkdir(parents=True, exist_ok=True)
            (base / "annotations" / split).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (W, H), (k, 2, 3)).save(base / "images" / split / f"{name}.jpg")
            Image.fromarray(ade150_raw(k + n), mode="L").save(
                base / "annotations" / split / f"{name}.png")


def test_ade150(tmp_path):
    make_ade150(tmp_path / "raw")
    summary = CONVERTERS["ade20k"](tmp_path / "raw", tmp_path / "out", progress=False)
    assert summary["splits"]["train"]["converted"] == 2
    info = load_classes(tmp_path / "out")
    assert info.num_classes == 150 and info.names[0] == "wall" and info.names[-1] == "flag"
    got = np.asarray(Image.open(tmp_path / "out" / "annotations" / "val" / "ADE_val_00000001.png"))
    raw = ade150_raw(1).astype(np.int64)
    np.testing.assert_array_equal(got, np.where(raw == 0, 255, raw - 1))


def test_ade150_bad_value(tmp_path):
    make_ade150(tmp_path / "raw")
    p = tmp_path / "raw/ADEChallengeData2016/annotations/training/ADE_train_00000002.png"
    lab = ade150_raw(0)
    lab[1, 1] = 151
    Image.fromarray(lab, mode="L").save(p)
    with pytest.raises(DataError, match=r"ADE_train_00000002\.png.*151"):
        CONVERTERS["ade20k"](tmp_path / "raw", tmp_path / "out", progress=False)


# a test-only stand-in for Mask2Former's 847-entry list
CATEGORIES = [{"name": "wall", "id": 2978, "trainId": 0},
              {"name": "building, edifice", "id": 312, "trainId": 1},
              {"name": "sky", "id": 2420, "trainId": 2}]
REGISTER_PY = ("from detectron2.data import DatasetCatalog\n\n"
               f"ADE20K_SEM_SEG_FULL_CATEGORIES = {CATEGORIES!r}\n\n"
               "def register_all_ade20k_full(root):\n    pass\n")


def encode(class_index: np.ndarray) -> np.ndarray:
    """Official ADE20K-Full encoding: R = index // 256 * 10, G = index % 256."""
    rgb = np.zeros(class_index.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = class_index // 256 * 10
    rgb[..., 1] = class_index % 256
    rgb[..., 2] = 7  # instance channel, ignored
    return rgb


def full_raw() -> np.ndarray:
    raw = np.zeros((H, W), dtype=np.int64)
    raw[0:3] = 2978
    raw[3:5] = 312
    raw[5, :4] = 2420
    raw[6, :] = 1500  # a class outside the 847
    return raw


def test_ade_full_official_rgb(tmp_path):
    root = tmp_path / "raw" / "ADE20K_2021_17_01"
    for split, name in (("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001")):
        folder = root / "images" / "ADE" / split / "cultural" / "apse__indoor"
        folder.mkdir(parents=True)
        Image.new("RGB", (W, H)).save(folder / f"{name}.jpg")
        Image.fromarray(encode(full_raw())).save(folder / f"{name}_seg.png")
    (tmp_path / "raw" / "register_ade20k_full.py").write_text(REGISTER_PY)
    summary = CONVERTERS["ade20k"](tmp_path / "raw", tmp_path / "out", variant="847",
                                   progress=False)
    assert summary["format"].startswith("official")
    info = load_classes(tmp_path / "out")
    assert info.names == ("wall", "building, edifice", "sky") and info.ignore_index == 65535
    with Image.open(tmp_path / "out" / "annotations" / "train" / "ADE_train_00000001.png") as im:
        got = np.asarray(im).astype(np.int64)
    want = np.full((H, W), 65535)
    for cat in CATEGORIES:
        want[full_raw() == cat["id"]] = cat["trainId"]
    np.testing.assert_array_equal(got, want)


def test_ade_full_prepared_sixteen_bit(tmp_path):
    root = tmp_path / "raw" / "ADE20K_2021_17_01"
    lab = np.full((H, W), 65535, dtype=np.uint16)
    lab[:2] = 2
    lab[4] = 0
    for split, name in (("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001")):
        (root / "images_detectron2" / split).mkdir(parents=True)
        (root / "annotations_detectron2" / split).mkdir(parents=True)
        Image.new("RGB", (W, H)).save(root / "images_detectron2" / split / f"{name}.jpg")
        Image.fromarray(lab).save(root / "annotations_detectron2" / split / f"{name}.tif")
    with pytest.raises(DataError, match="register_ade20k_full.py"):
        CONVERTERS["ade20k"](tmp_path / "raw", tmp_path / "out", variant="847", progress=False)
    (root / "register_ade20k_full.py").write_text(REGISTER_PY)
    CONVERTERS["ade20k"](tmp_path / "raw", tmp_path / "out", variant="847", progress=False)
    got = np.asarray(Image.open(tmp_path / "out" / "annotations" / "val" / "ADE_val_00000001.png"))
    np.testing.assert_array_equal(got.astype(np.int64), lab.astype(np.int64))
    bad = lab.copy()
    bad[7, 8] = 5  # only 3 classes in the list
    ann = root / "annotations_detectron2" / "training"
    Image.fromarray(bad).save(ann / "ADE_train_00000001.tif")
    with pytest.raises(DataError, match=r"ADE_train_00000001\.tif.*5"):
        CONVERTERS["ade20k"](tmp_path / "raw", tmp_path / "out2", variant="847", progress=False)


def test_output_loads_with_segmentation_dataset(tmp_path):
    dataset = pytest.importorskip("celseg.data.dataset")
    make_ade150(tmp_path / "raw")
    CONVERTERS["ade20k"](tmp_path / "raw", tmp_path / "out", progress=False)
    ds = dataset.SegmentationDataset(tmp_path / "out", "val")
    _, label, _ = ds[0]
    raw = ade150_raw(1).astype(np.int64)
    np.testing.assert_array_equal(label.numpy(), np.where(raw == 0, 255, raw - 1))
