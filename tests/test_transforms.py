"""Paired transforms keep image and label aligned; padding, flip, normalise against references."""

from __future__ import annotations

import dataclasses

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from celseg.config import DataConfig
from celseg.data.transforms import (
    ColorJitter,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    build_eval_transform,
    build_train_transform,
    denormalize,
    normalize,
    resize_pair,
)


def _block_pair(h: int, w: int, block: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image of pure R/G/B blocks and the label "index of the dominant channel"."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, 3, (-(-h // block), -(-w // block)), generator=g)
    label = cells.repeat_interleave(block, 0).repeat_interleave(block, 1)[:h, :w]
    image = torch.nn.functional.one_hot(label, 3).permute(2, 0, 1).float() * 0.9 + 0.05
    return image, label


def _check_alignment(image: torch.Tensor, label: torch.Tensor) -> int:
    """Where a pixel is almost purely one colour (not a resampling blend of blocks), the label
    must be that colour's id; a shift of one pixel or a one-sided flip breaks this."""
    top2 = image.topk(2, dim=0).values
    pure = (top2[0] - top2[1] > 0.75 * top2[0]) & (label != 255)
    assert pure.any()
    assert torch.equal(image.argmax(0)[pure], label[pure])
    return int(pure.sum())


@settings(max_examples=25, deadline=None)
@given(h=st.integers(20, 70), w=st.integers(20, 70), seed=st.integers(0, 10_000),
       lo=st.floats(0.5, 1.0), hi=st.floats(1.0, 2.0), crop=st.integers(16, 80))
def test_train_transform_never_misaligns(h, w, seed, lo, hi, crop):
    image, label = _block_pair(h, w, 6, seed)
    cfg = dataclasses.replace(DataConfig(), crop_size=crop, min_scale=lo, max_scale=hi,
                              color_jitter=0.3)
    torch.manual_seed(seed)
    img, lbl = build_train_transform(cfg)(image, label)
    assert img.shape == (3, crop, crop) and lbl.shape == (crop, crop) and lbl.dtype == torch.long
    _check_alignment(denormalize(img), lbl)
    assert set(lbl.unique().tolist()) <= {0, 1, 2, 255}


def test_crop_and_flip_exact_against_slicing():
    image, label = _block_pair(40, 50, 3, 1)
    torch.manual_seed(0)
    img, lbl = RandomCrop(24)(image, label)
    # find the crop offset from the label and check the image came from the same window
    for y in range(40 - 24 + 1):
        for x in range(50 - 24 + 1):
            if torch.equal(image[:, y:y + 24, x:x + 24], img):
                assert torch.equal(label[y:y + 24, x:x + 24], lbl)
                break
    flipped = RandomHorizontalFlip(p=1.0)(image, label)
    assert torch.equal(flipped[0][:, :, 0], image[:, :, -1])
    assert torch.equal(flipped[1][:, 0], label[:, -1])


def test_crop_pads_labels_with_ignore_and_image_with_zero():
    image, label = _block_pair(10, 12, 2, 0)
    img, lbl = RandomCrop(20)(image, label)
    assert torch.equal(lbl[:10, :12], label)
    assert (lbl[10:] == 255).all() and (lbl[:, 12:] == 255).all()
    assert (img[:, 10:] == 0).all()


def test_resize_label_nearest_keeps_ids_and_geometry():
    label = torch.zeros(8, 8, dtype=torch.long)
    label[:, 4:] = 7
    image = torch.zeros(3, 8, 8)
    img, lbl = resize_pair(image, label, (16, 16))
    # exact upsampling by 2: every source pixel becomes a 2x2 block
    assert torch.equal(lbl, label.repeat_interleave(2, 0).repeat_interleave(2, 1))
    _, down = resize_pair(img, lbl, (8, 8))
    assert torch.equal(down, label)


def test_random_scale_range_and_color_jitter_image_only():
    image, label = _block_pair(40, 60, 4, 2)
    torch.manual_seed(1)
    for _ in range(10):
        img, lbl = RandomScale(0.5, 2.0)(image, label)
        s = img.shape[-2] / 40
        assert 0.49 <= s <= 2.01 and img.shape[-2:] == lbl.shape
    img, lbl = ColorJitter(0.4)(image, label)
    assert lbl is label and img.shape == image.shape and 0 <= img.min() and img.max() <= 1


def test_normalize_matches_imagenet_reference_and_inverts():
    x = torch.rand(2, 3, 5, 5)
    ref = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor(
        [0.229, 0.224, 0.225])[:, None, None]
    assert torch.allclose(normalize(x), ref)
    assert torch.allclose(denormalize(normalize(x[0])), x[0], atol=1e-6)


def test_eval_transform_resizes_short_side_only_when_asked():
    image, label = _block_pair(30, 60, 5, 3)
    img, lbl = build_eval_transform(DataConfig())(image, label)
    assert img.shape == (3, 30, 60) and torch.equal(lbl, label)
    img, lbl = build_eval_transform(dataclasses.replace(DataConfig(), eval_size=60))(image, label)
    assert img.shape == (3, 60, 120) and lbl.shape == (60, 120)
