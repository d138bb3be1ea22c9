"""Batching of (image, label) samples: the label ignore value, stacking and stride padding.

One ignore value per dataset (:func:`label_ignore_index`) is used by the dataset's id map, the
collate padding, the stride padding and the evaluator's confusion matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from celseg.data.classes import ClassInfo
from celseg.errors import DataError

DEFAULT_IGNORE = 255
MAX_LABEL = 65535  # labels are 8- or 16-bit PNGs
PAD_MULTIPLE = 32  # the backbone's largest stride


def label_ignore_index(class_info: ClassInfo) -> int:
    """Ignore value of label tensors for a dataset with these classes.

    255 while every class id fits below it (<= 255 classes: 8-bit data, the value the losses and
    the trainer assume); otherwise the dataset's own ``class_info.ignore_index`` (65535 for the
    16-bit Context-459 / ADE20K-847 conversions), which must not be a class id.
    """
    if class_info.num_classes <= DEFAULT_IGNORE:
        return DEFAULT_IGNORE
    ignore = int(class_info.ignore_index)
    if 0 <= ignore < class_info.num_classes or ignore > MAX_LABEL:
        raise DataError(f"ignore_index {ignore} of a {class_info.num_classes}-class dataset "
                        f"must lie in {class_info.num_classes}..{MAX_LABEL}")
    return ignore


def collate(batch: list, ignore_index: int = DEFAULT_IGNORE
            ) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Stack samples into (B, 3, H, W), (B, H, W), metas; pads images with 0 and labels with
    ``ignore_index`` (pass ``dataset.ignore_index``: 255 unless the dataset has > 255 classes,
    e.g. ``functools.partial(collate, ignore_index=dataset.ignore_index)``)."""
    h = max(b[0].shape[-2] for b in batch)
    w = max(b[0].shape[-1] for b in batch)
    images = batch[0][0].new_zeros((len(batch), 3, h, w))
    labels = torch.full((len(batch), h, w), ignore_index, dtype=torch.long)
    for k, (img, lbl, _) in enumerate(batch):
        images[k, :, : img.shape[-2], : img.shape[-1]] = img
        labels[k, : lbl.shape[-2], : lbl.shape[-1]] = lbl
    return images, labels, [b[2] for b in batch]


def pad_batch(images: torch.Tensor, labels: torch.Tensor | None = None,
              multiple: int = PAD_MULTIPLE, ignore_index: int = DEFAULT_IGNORE
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pad (B,3,H,W) images with 0 and (B,H,W) labels with ignore to a multiple of ``multiple``."""
    h, w = images.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        images = F.pad(images, (0, pw, 0, ph))
        if labels is not None:
            labels = F.pad(labels, (0, pw, 0, ph), value=ignore_index)
    return images, labels
