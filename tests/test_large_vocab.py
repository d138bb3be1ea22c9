"""Datasets with more than 255 classes (Context-459, ADE20K-847): 16-bit labels, ignore 65535.

A 300-class fixture is written in Mask2Former's prepared ADE20K-Full format and converted with
``celseg make-data``'s converter; the dataset, the batching and the evaluator must keep ids 255
and 256..299 as classes and treat only 65535 (and batch padding) as ignore.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from celseg.config import EvalConfig
from celseg.data.batching import collate, label_ignore_index
from celseg.data.classes import load_classes
from celseg.data.convert import CONVERTERS
from celseg.data.dataset import SegmentationDataset
from celseg.errors import DataError

N = 300
IGNORE = 65535


def _label_a() -> np.ndarray:  # 6 x 8
    lab = np.full((6, 8), IGNORE, dtype=np.uint16)
    lab[0:2] = 299
    lab[2:4] = 256
    lab[4] = 3
    return lab


def _label_b() -> np.ndarray:  # 8 x 10
    lab = np.full((8, 10), IGNORE, dtype=np.uint16)
    lab[0:4] = 3
    lab[4:6] = 255  # a class here, not ignore
    lab[6, :5] = 0
    return lab


@pytest.fixture(scope="module")
def root16(tmp_path_factory):
    """A converted 300-class ADE20K-Full-style dataset (val: a 6x8 and an 8x10 image)."""
    raw = tmp_path_factory.mktemp("raw") / "ADE20K_2021_17_01"
    cats = [{"name": f"class{i:03d}", "id": 5000 + i, "trainId": i} for i in range(N)]
    files = {"training": [("ADE_train_00000001", _label_a())],
             "validation": [("ADE_val_00000001", _label_a()), ("ADE_val_00000002", _label_b())]}
    for split, items in files.items():
        (raw / "images_detectron2" / split).mkdir(parents=True)
        (raw / "annotations_detectron2" / split).mkdir(parents=True)
        for name, lab in items:
            h, w = lab.shape
            Image.new("RGB", (w, h), (90, 120, 30)).save(
                raw / "images_detectron2" / split / f"{name}.jpg")
            Image.fromarray(lab).save(raw / "annotations_detectron2" / split / f"{name}.tif")
    (raw / "ade20k_full_categories.json").write_text(json.dumps(cats))
    out = tmp_path_factory.mktemp("ade300")
    CONVERTERS["ade20k"](raw.parent, out, variant="847", progress=False)
    return out


def test_converted_16bit_labels_load(root16):
    info = load_classes(root16)
    assert info.num_classes == N and info.ignore_index == IGNORE
    ds = SegmentationDataset(root16, "val")
    assert ds.ignore_index == IGNORE and len(ds.lut) == IGNORE + 1
    _, label, meta = ds[0]
    assert meta["name"] == "ADE_val_00000001"
    np.testing.assert_array_equal(label.numpy(), _label_a().astype(np.int64))
    _, label, _ = ds[1]
    np.testing.assert_array_equal(label.numpy(), _label_b().astype(np.int64))
    assert int((label == 255).sum()) == 20  # class 255 survives


def test_zero_shot_view_maps_unseen_to_the_dataset_ignore(root16):
    info = load_classes(root16).with_split(["class256"])
    ds = SegmentationDataset(root16, "val", view="zero_shot", class_info=info)
    _, label, _ = ds[0]
    want = _label_a().astype(np.int64)
    want[want == 256] = IGNORE
    np.testing.assert_array_equal(label.numpy(), want)


def test_16bit_id_outside_the_classes_is_named(root16, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(root16, root)
    lab = _label_a()
    lab[5, 7] = 300  # only 0..299 exist
    Image.fromarray(lab).save(root / "annotations" / "val" / "ADE_val_00000001.png")
    with pytest.raises(DataError, match=r"ADE_val_00000001\.png.*300"):
        SegmentationDataset(root, "val")[0]


def test_collate_pads_with_the_dataset_ignore(root16):
    ds = SegmentationDataset(root16, "val")
    _, labels, _ = functools.partial(collate, ignore_index=ds.ignore_index)([ds[0], ds[1]])
    assert labels.shape == (2, 8, 10)
    assert (labels[0, 6:] == IGNORE).all() and (labels[0, :, 8:] == IGNORE).all()
    _, labels, _ = collate([ds[0], ds[1]])  # the default is unchanged
    assert (labels[0, 6:] == 255).all()


def test_8bit_path_unchanged(synthetic_root):
    ds = SegmentationDataset(synthetic_root, "val")
    assert ds.class_info.num_classes <= 255
    assert ds.ignore_index == 255 and len(ds.lut) == 256
    assert label_ignore_index(ds.class_info) == 255


def test_ignore_colliding_with_a_class_is_refused(root16):
    import dataclasses

    info = dataclasses.replace(load_classes(root16), ignore_index=255)
    with pytest.raises(DataError, match="ignore_index 255"):
        SegmentationDataset(root16, "val", class_info=info)


class FixedSegmenter(torch.nn.Module):
    """Two proposals at the input resolution: class 299 on columns x < 4, class 3 elsewhere."""

    has_background = False

    def forward(self, images: torch.Tensor, text_emb: torch.Tensor) -> dict:
        b, _, h, w = images.shape
        c = text_emb.shape[0]
        logits = torch.zeros(b, 2, c)
        logits[:, 0, 299] = 40.0
        logits[:, 1, 3] = 40.0
        masks = torch.full((b, 2, h, w), -20.0)
        masks[:, 0, :, :4] = 20.0
        masks[:, 1, :, 4:] = 20.0
        return {"pred_logits": logits, "pred_masks": masks, "text_emb": text_emb}


# hand count of (gt, pred) pixels for the two validation labels and the prediction above
HAND = {(299, 299): 8, (299, 3): 8, (256, 299): 8, (256, 3): 8, (3, 299): 20, (3, 3): 28,
        (255, 299): 8, (255, 3): 12, (0, 299): 4, (0, 3): 1}


def test_confusion_matrix_of_batches_matches_hand_count(root16):
    from celseg.data.batching import pad_batch
    from celseg.evaluation.metrics import ConfusionMatrix
    from celseg.models.inference import semantic_map

    ds = SegmentationDataset(root16, "val")
    images, labels, _ = functools.partial(collate, ignore_index=ds.ignore_index)([ds[0], ds[1]])
    images, labels = pad_batch(images, labels, ignore_index=ds.ignore_index)
    assert labels.shape == (2, 32, 32)
    emb = torch.zeros(N, 4)
    pred = semantic_map(FixedSegmenter()(images, emb), (32, 32), has_background=False)
    cm = ConfusionMatrix(N, ds.ignore_index)
    cm.update(pred, labels)
    want = torch.zeros(N, N, dtype=torch.int64)
    for (g, p), n in HAND.items():
        want[g, p] = n
    assert torch.equal(cm.matrix, want)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_evaluate_300_classes_matches_hand_count(root16, batch_size):
    from celseg.engine.evaluator import evaluate

    info = load_classes(root16)
    ds = SegmentationDataset(root16, "val")
    summary = evaluate(FixedSegmenter(), ds, torch.zeros(N, 4), info,
                       EvalConfig(batch_size=batch_size), "cpu")
    assert summary["num_pixels"] == sum(HAND.values()) == 105
    assert summary["pixel_acc"] == pytest.approx(100.0 * 36 / 105)
    per = summary["per_class"]
    assert per["class299"]["iou"] == pytest.approx(100.0 * 8 / (16 + 48 - 8))
    assert per["class003"]["iou"] == pytest.approx(100.0 * 28 / (48 + 57 - 28))
    for name in ("class256", "class255", "class000"):
        assert per[name]["present"] and per[name]["iou"] == 0.0
    assert not per["class001"]["present"]


def test_segmenter_calibration_lowers_only_the_classes_the_run_was_labelled_with(root16):
    """An oracle (every class labelled) is not calibrated at all; a run labelled with class 3
    only loses class 3's pixels to class 299: the right proposal's p(3) = 0.6 and p(299) = 0.4
    become 0.1 and 0.4."""
    import math

    from celseg.engine.evaluator import evaluate

    class SoftSegmenter(FixedSegmenter):
        def forward(self, images, text_emb):
            out = super().forward(images, text_emb)
            out["pred_logits"][:, 1] = -40.0
            out["pred_logits"][:, 1, 3] = math.log(0.6)
            out["pred_logits"][:, 1, 299] = math.log(0.4)
            return out

    info = load_classes(root16)
    ds = SegmentationDataset(root16, "val")

    def per_class(calibration, labelled):
        cfg = EvalConfig(batch_size=2, ensemble=False, segmenter_calibration=calibration)
        per = evaluate(SoftSegmenter(), ds, torch.zeros(N, 4), info, cfg, "cpu",
                       labelled_ids=labelled)["protocols"]["segmenter"]["per_class"]
        return {name: c["iou"] for name, c in per.items() if c["present"]}

    everything = tuple(range(N))
    plain = per_class(0.0, everything)
    assert plain == per_class(0.5, everything)
    only3 = per_class(0.5, (3,))
    assert plain["class003"] == pytest.approx(100.0 * 28 / (48 + 57 - 28))
    assert only3["class003"] == 0.0  # no pixel is labelled 3 any more
    assert only3["class299"] == pytest.approx(100.0 * 16 / (16 + 105 - 16))
