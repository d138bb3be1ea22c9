"""VOC 2012 converter on a tiny fixture written in the official layout (palette PNGs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from celseg.data.classes import load_classes
from celseg.data.convert import CONVERTERS
from celseg.errors import DataError
from celseg.paper.fixtures import voc_palette  # the devkit's colour map

H, W = 10, 12
VOC_NAMES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
             "train", "tvmonitor"]




def save_palette_png(arr: np.ndarray, path: Path) -> None:
    im = Image.frombytes("P", (arr.shape[1], arr.shape[0]), arr.astype(np.uint8).tobytes())
    im.putpalette(voc_palette())
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def raw_label(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 21, size=(H, W)).astype(np.uint8)
    lab[0, :] = 255  # boundary
    return lab


def save_jpg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path, quality=95)


def make_voc(root: Path, train=("a", "b"), val=("c",)) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    for k, name in enumerate(list(train) + list(val)):
        save_jpg(voc / "JPEGImages" / f"{name}.jpg", k)
        save_palette_png(raw_label(k), voc / "SegmentationClass" / f"{name}.png")
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("".join(f"{n}\n" for n in train))
    (lists / "val.txt").write_text("".join(f"{n}\n" for n in val))
    return voc


def expected(raw: np.ndarray) -> np.ndarray:
    """Naive reference: 0 and 255 -> 255, k -> k-1, pixel by pixel."""
    out = np.empty_like(raw)
    for (y, x), v in np.ndenumerate(raw):
        out[y, x] = 255 if v in (0, 255) else v - 1
    return out


def read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "L"
        return np.asarray(im)


def test_convert_voc_palette_pngs(tmp_path):
    make_voc(tmp_path / "raw")
    out = tmp_path / "out"
    summary = CONVERTERS["voc"](tmp_path / "raw", out, progress=False)
    assert summary["splits"]["train"]["converted"] == 2
    assert summary["splits"]["val"]["converted"] == 1
    assert summary["train_labels"] == "SegmentationClass"
    for k, (split, name) in enumerate([("train", "a"), ("train", "b"), ("val", "c")]):
        np.testing.assert_array_equal(read(out / "annotations" / split / f"{name}.png"),
                                      expected(raw_label(k)))
        assert (out / "images" / split / f"{name}.jpg").is_file()
    info = load_classes(out)
    assert list(info.names) == VOC_NAMES
    assert [info.names[i] for i in info.unseen_ids] == [
        "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
    assert summary["unseen"] == ["pottedplant", "sheep", "sofa", "train", "tvmonitor"]


def test_resumable_skips_checked_outputs_and_redoes_broken_ones(tmp_path):
    make_voc(tmp_path / "raw")
    out = tmp_path / "out"
    CONVERTERS["voc"](tmp_path / "raw", out, progress=False)
    again = CONVERTERS["voc"](tmp_path / "raw", out, progress=False)
    assert again["skipped"] == 3 and again["converted"] == 0
    broken = out / "annotations" / "train" / "b.png"
    broken.write_bytes(broken.read_bytes()[:20])  # truncated
    wrong_size = out / "images" / "val" / "c.jpg"
    Image.new("RGB", (3, 3)).save(wrong_size)
    third = CONVERTERS["voc"](tmp_path / "raw", out, progress=False)
    assert third["converted"] == 2 and third["skipped"] == 1
    np.testing.assert_array_equal(read(broken), expected(raw_label(1)))
    assert Image.open(wrong_size).size == (W, H)


def test_segmentation_class_aug_used_for_training(tmp_path):
    voc = make_voc(tmp_path / "raw", train=("a", "b"), val=("c",))
    save_jpg(voc / "JPEGImages" / "d.jpg", 7)
    aug = voc / "SegmentationClassAug"
    aug.mkdir()
    for k, name in enumerate(["a", "b", "c", "d"]):  # grayscale ids, includes a val image
        Image.fromarray(raw_label(10 + k), mode="L").save(aug / f"{name}.png")
    summary = CONVERTERS["voc"](tmp_path / "raw", tmp_path / "out", progress=False)
    assert summary["train_labels"] == "SegmentationClassAug"
    train = sorted(p.stem for p in (tmp_path / "out" / "annotations" / "train").glob("*.png"))
    assert train == ["a", "b", "d"]  # val image c excluded from training
    np.testing.assert_array_equal(read(tmp_path / "out" / "annotations" / "train" / "d.png"),
                                  expected(raw_label(13)))
    # validation still reads the original palette labels
    np.testing.assert_array_equal(read(tmp_path / "out" / "annotations" / "val" / "c.png"),
                                  expected(raw_label(2)))


def test_missing_and_corrupt_files_are_named(tmp_path):
    voc = make_voc(tmp_path / "raw")
    (voc / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(DataError, match="b.png"):
        CONVERTERS["voc"](tmp_path / "raw", tmp_path / "out", progress=False)
    voc2 = make_voc(tmp_path / "raw2")
    (voc2 / "JPEGImages" / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(DataError, match="c.jpg"):
        CONVERTERS["voc"](tmp_path / "raw2", tmp_path / "out2", progress=False)
    voc3 = make_voc(tmp_path / "raw3")
    bad = raw_label(0)
    bad[3, 3] = 40
    save_palette_png(bad, voc3 / "SegmentationClass" / "a.png")
    with pytest.raises(DataError, match=r"a\.png.*40"):
        CONVERTERS["voc"](tmp_path / "raw3", tmp_path / "out3", progress=False)
    with pytest.raises(DataError, match="JPEGImages"):
        CONVERTERS["voc"](tmp_path / "nothing", tmp_path / "out4", progress=False)


def test_user_split_file(tmp_path):
    make_voc(tmp_path / "raw")
    split = tmp_path / "split.json"
    split.write_text(json.dumps(["cat", "dog"]))
    CONVERTERS["voc"](tmp_path / "raw", tmp_path / "out", split_file=split, progress=False)
    info = load_classes(tmp_path / "out")
    assert [info.names[i] for i in info.unseen_ids] == ["cat", "dog"]
    split.write_text(json.dumps(["cat", "unicorn"]))
    with pytest.raises(DataError, match="unicorn"):
        CONVERTERS["voc"](tmp_path / "raw", tmp_path / "out2", split_file=split, progress=False)
    with pytest.raises(DataError, match="split file not found"):
        CONVERTERS["voc"](tmp_path / "raw", tmp_path / "out3", split_file=tmp_path / "no.json",
                          progress=False)


def test_output_loads_with_segmentation_dataset(tmp_path):
    dataset = pytest.importorskip("celseg.data.dataset")
    make_voc(tmp_path / "raw")
    CONVERTERS["voc"](tmp_path / "raw", tmp_path / "out", progress=False)
    ds = dataset.SegmentationDataset(tmp_path / "out", "train")
    assert len(ds) == 2
    image, label, meta = ds[0]
    assert image.shape == (3, H, W) and label.shape == (H, W)
    np.testing.assert_array_equal(label.numpy(), expected(raw_label(0)))
    zs = dataset.SegmentationDataset(tmp_path / "out", "train", view="zero_shot")
    _, zlabel, _ = zs[0]
    unseen = np.isin(expected(raw_label(0)), [15, 16, 17, 18, 19])
    assert (zlabel.numpy()[unseen] == 255).all()
