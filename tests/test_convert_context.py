"""PASCAL Context converter: official trainval/*.mat + labels.txt, and detectron2-prepared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from celseg.data.classes import load_classes
from celseg.data.convert import CONVERTERS
from celseg.errors import DataError

H, W = 8, 10
SPLITS = json.loads(
    (Path(__file__).resolve().parents[1] / "src/celseg/data/splits/context59.json").read_text())
NAMES59 = [c["name"] for c in SPLITS["classes"]]
UNSEEN = ["aeroplane", "bed", "bedclothes", "boat", "bottle", "car", "cloth", "cow", "keyboard",
          "plate"]
# test-only stand-in for the official 459-name labels.txt: the 59 real names at spread-out ids,
# made-up filler names elsewhere
ID_OF = {name: 3 + 7 * k for k, name in enumerate(NAMES59)}
LABELS = {i: f"filler{i}" for i in range(1, 460)} | {i: n for n, i in ID_OF.items()}


def label_map(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.array([0, ID_OF["cow"], ID_OF["wood"], ID_OF["aeroplane"], 1, 459])
    return values[rng.integers(0, len(values), size=(H, W))].astype(np.uint16)


def make_context(root: Path) -> Path:
    voc = root / "VOCdevkit" / "VOC2010"
    (voc / "trainval").mkdir(parents=True)
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "labels.txt").write_text("".join(f"{i}: {n}\n" for i, n in LABELS.items()))
    for k, i in enumerate(["2008_000002", "2008_000003", "2008_000007"]):
        Image.new("RGB", (W, H), (k * 50, 90, 30)).save(voc / "JPEGImages" / f"{i}.jpg")
        scipy.io.savemat(voc / "trainval" / f"{i}.mat", {"LabelMap": label_map(k)})
    (voc / "pascalcontext_train.txt").write_text("2008_000002\n2008_000003\n")
    (voc / "pascalcontext_val.txt").write_text("2008_000007\n")
    return voc


def test_context59_from_mat(tmp_path):
    make_context(tmp_path / "raw")
    out = tmp_path / "out"
    summary = CONVERTERS["context"](tmp_path / "raw", out, progress=False)
    assert summary["format"] == "official .mat"
    assert summary["splits"]["train"]["converted"] == 2
    info = load_classes(out)
    assert info.num_classes == 59 and len(info.seen_ids) == 49
    assert sorted(info.names[i] for i in info.unseen_ids) == sorted(UNSEEN)
    with Image.open(out / "annotations" / "val" / "2008_000007.png") as im:
        assert im.mode == "L"
        got = np.asarray(im)
    raw = label_map(2)
    want = np.full((H, W), 255)
    for name in ("cow", "wood", "aeroplane"):
        want[raw == ID_OF[name]] = info.index(name)
    np.testing.assert_array_equal(got, want)


def test_context459_sixteen_bit(tmp_path):
    make_context(tmp_path / "raw")
    out = tmp_path / "out"
    CONVERTERS["context"](tmp_path / "raw", out, variant="459", progress=False)
    info = load_classes(out)
    assert info.num_classes == 459 and info.ignore_index == 65535
    assert info.names[ID_OF["cow"] - 1] == "cow" and info.unseen_ids == []
    with Image.open(out / "annotations" / "train" / "2008_000002.png") as im:
        got = np.asarray(im).astype(np.int64)
    raw = label_map(0).astype(np.int64)
    np.testing.assert_array_equal(got, np.where(raw == 0, 65535, raw - 1))


def test_detectron2_prepared_pc59(tmp_path):
    voc = tmp_path / "raw" / "VOC2010"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "labels.txt").write_text("".join(f"{i}: {n}\n" for i, n in LABELS.items()))
    order = NAMES59[::-1]  # ids of the prepared PNGs follow 59_labels.txt
    (voc / "59_labels.txt").write_text("".join(f"{k + 1}: {n}\n" for k, n in enumerate(order)))
    ann = voc / "annotations_detectron2" / "pc59_val"
    ann.mkdir(parents=True)
    Image.new("RGB", (W, H)).save(voc / "JPEGImages" / "2008_000009.jpg")
    lab = np.full((H, W), 255, dtype=np.uint8)
    lab[2:4, 2:4] = order.index("cow")
    lab[5, :] = order.index("wood")
    Image.fromarray(lab, mode="L").save(ann / "2008_000009.png")
    summary = CONVERTERS["context"](tmp_path / "raw", tmp_path / "out", progress=False)
    assert summary["format"].startswith("detectron2") and list(summary["splits"]) == ["val"]
    info = load_classes(tmp_path / "out")
    got = np.asarray(Image.open(tmp_path / "out" / "annotations" / "val" / "2008_000009.png"))
    assert (got[2:4, 2:4] == info.index("cow")).all() and (got[5] == info.index("wood")).all()
    assert (got[0] == 255).all()


def test_errors_name_the_file(tmp_path):
    voc = make_context(tmp_path / "raw")
    (voc / "trainval" / "2008_000003.mat").write_bytes(b"MATLAB 5.0 garbage")
    with pytest.raises(DataError, match="2008_000003.mat"):
        CONVERTERS["context"](tmp_path / "raw", tmp_path / "out", progress=False)
    (voc / "trainval" / "2008_000003.mat").unlink()
    with pytest.raises(DataError, match="missing file.*2008_000003.mat"):
        CONVERTERS["context"](tmp_path / "raw", tmp_path / "out", progress=False)
    (voc / "labels.txt").unlink()
    with pytest.raises(DataError, match="labels.txt"):
        CONVERTERS["context"](tmp_path / "raw", tmp_path / "out", progress=False)


def test_output_loads_with_segmentation_dataset(tmp_path):
    dataset = pytest.importorskip("celseg.data.dataset")
    make_context(tmp_path / "raw")
    CONVERTERS["context"](tmp_path / "raw", tmp_path / "out", progress=False)
    ds = dataset.SegmentationDataset(tmp_path / "out", "train")
    assert len(ds) == 2
    _, label, _ = ds[1]
    assert set(np.unique(label.numpy())) <= {255, *(ds.class_info.index(n) for n in
                                                     ("cow", "wood", "aeroplane"))}
