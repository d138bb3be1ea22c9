"""SegmentationDataset: shapes, zero-shot view, pseudo-label folder, collate, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from celseg.config import DataConfig
from celseg.data.batching import collate
from celseg.data.captions import read_captions
from celseg.data.classes import load_classes
from celseg.data.dataset import SegmentationDataset
from celseg.data.transforms import build_train_transform, denormalize
from celseg.errors import DataError


def _raw_label(root: Path, split: str, name: str) -> np.ndarray:
    return np.asarray(Image.open(root / "annotations" / split / f"{name}.png")).astype(np.int64)


def test_items_shapes_and_values(synthetic_root):
    ds = SegmentationDataset(synthetic_root, "train")
    assert len(ds) == 12 and ds.class_info.num_classes == 24
    img, lbl, meta = ds[0]
    assert img.shape == (3, 64, 64) and img.dtype == torch.float32
    assert lbl.shape == (64, 64) and lbl.dtype == torch.long
    assert meta["size"] == (64, 64) and meta["name"] == Path(meta["path"]).stem
    raw = np.asarray(Image.open(meta["path"]).convert("RGB")).astype(np.float32) / 255
    assert torch.allclose(denormalize(img).permute(1, 2, 0), torch.from_numpy(raw), atol=1e-5)
    assert np.array_equal(lbl.numpy(), _raw_label(synthetic_root, "train", meta["name"]))


def test_zero_shot_view_hides_exactly_the_unseen_ids(synthetic_root):
    info = load_classes(synthetic_root)
    full = SegmentationDataset(synthetic_root, "train")
    zs = SegmentationDataset(synthetic_root, "train", view="zero_shot")
    unseen = torch.tensor(info.unseen_ids)
    hidden_total = 0
    for i in range(len(full)):
        a, b = full[i][1], zs[i][1]
        is_unseen = torch.isin(a, unseen)
        assert (b[is_unseen] == 255).all()
        assert torch.equal(a[~is_unseen], b[~is_unseen])
        assert not torch.isin(b, unseen).any()
        hidden_total += int(is_unseen.sum())
    assert hidden_total > 0


def test_custom_split_and_max_items(synthetic_root):
    info = load_classes(synthetic_root).with_split(["grass"])
    ds = SegmentationDataset(synthetic_root, "val", view="zero_shot", class_info=info,
                             max_items=3)
    assert len(ds) == 3
    for i in range(3):
        lbl = ds[i][1]
        raw = _raw_label(synthetic_root, "val", ds[i][2]["name"])
        expect = np.where(raw == info.index("grass"), 255, raw)
        assert np.array_equal(lbl.numpy(), expect)


def test_label_dir_reads_pseudo_labels(synthetic_root, tmp_path):
    names = [p.stem for p in sorted((synthetic_root / "images" / "train").glob("*.png"))]
    for k, n in enumerate(names):
        Image.fromarray(np.full((64, 64), k % 24, np.uint8), mode="L").save(tmp_path / f"{n}.png")
    ds = SegmentationDataset(synthetic_root, "train", label_dir=tmp_path)
    assert all(int(ds[k][1].unique()[0]) == k % 24 for k in range(len(ds)))


def test_collate_pads_with_zero_and_ignore(synthetic_root):
    ds = SegmentationDataset(synthetic_root, "val")
    a, b = ds[0], ds[1]
    small = (a[0][:, :40, :50], a[1][:40, :50], a[2])
    images, labels, metas = collate([small, b])
    assert images.shape == (2, 3, 64, 64) and labels.shape == (2, 64, 64)
    assert (images[0, :, 40:] == 0).all() and (labels[0, 40:] == 255).all()
    assert (labels[0, :, 50:] == 255).all() and torch.equal(labels[1], b[1])
    assert len(metas) == 2


def test_train_transform_output(synthetic_root):
    cfg = DataConfig(crop_size=48)
    ds = SegmentationDataset(synthetic_root, "train", transform=build_train_transform(cfg),
                             view="zero_shot")
    img, lbl, _ = ds[0]
    assert img.shape == (3, 48, 48) and lbl.shape == (48, 48)


def test_caption_splits(synthetic_root):
    recs = read_captions(synthetic_root)
    train, val = read_captions(synthetic_root, "train"), read_captions(synthetic_root, "val")
    assert len(train) + len(val) == len(recs) == 40 and train and val


# ---------------------------------------------------------------------------- bad input


@pytest.fixture()
def broken_root(synthetic_root, tmp_path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root, ignore=shutil.ignore_patterns("captions"))
    return root


def _first(root: Path, kind: str) -> Path:
    return sorted((root / kind / "val").glob("*.png"))[0]


def test_corrupt_image_names_file_and_can_be_skipped(broken_root):
    bad = _first(broken_root, "images")
    bad.write_bytes(b"not a png at all")
    ds = SegmentationDataset(broken_root, "val")
    with pytest.raises(DataError, match=bad.name):
        ds[0]
    ds = SegmentationDataset(broken_root, "val", skip_bad=True)
    _, _, meta = ds[0]
    assert meta["name"] != bad.stem and ds.skipped == 1 and bad.name in ds.bad[0]
    assert sum(1 for _ in range(len(ds)) if ds[_][2]["name"] == bad.stem) == 0


def test_missing_label_names_file_and_can_be_skipped(broken_root):
    lab = _first(broken_root, "annotations")
    lab.unlink()
    with pytest.raises(DataError, match=lab.name):
        SegmentationDataset(broken_root, "val")
    ds = SegmentationDataset(broken_root, "val", skip_bad=True)
    assert len(ds) == 5 and ds.skipped == 1


def test_label_of_other_size_names_both_sizes(broken_root):
    lab = _first(broken_root, "annotations")
    Image.fromarray(np.zeros((32, 40), np.uint8), mode="L").save(lab)
    with pytest.raises(DataError, match=r"40x32.*64x64"):
        SegmentationDataset(broken_root, "val")[0]


def test_unknown_id_names_file_and_value(broken_root):
    lab = _first(broken_root, "annotations")
    arr = np.asarray(Image.open(lab)).copy()
    arr[5, 5] = 99
    Image.fromarray(arr, mode="L").save(lab)
    with pytest.raises(DataError, match=rf"{lab.name}.*\[99\]"):
        SegmentationDataset(broken_root, "val")[0]
    ds = SegmentationDataset(broken_root, "val", skip_bad=True)
    assert all(ds[i][2]["name"] != lab.stem for i in range(len(ds))) and ds.skipped == 1


def test_rgb_label_and_missing_folders_are_errors(broken_root, tmp_path):
    lab = _first(broken_root, "annotations")
    Image.new("RGB", (64, 64)).save(lab)
    with pytest.raises(DataError, match="mode 'RGB'"):
        SegmentationDataset(broken_root, "val")[0]
    with pytest.raises(DataError, match="image folder not found"):
        SegmentationDataset(broken_root, "test")
    with pytest.raises(DataError, match="class file not found"):
        SegmentationDataset(tmp_path / "nothing", "val")
