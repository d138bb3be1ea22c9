"""Paired image/label transforms that never misalign the two.

Every transform takes and returns ``(image, label)``: image a float tensor (3, H, W) in [0, 1]
(normalised only by the final :class:`Normalize`), label a long tensor (H, W) or None. Geometry
is computed once and applied to both; images are resampled bilinearly and labels with
``nearest-exact``, which picks the source pixel whose centre is nearest, the same pixel-centre
convention as bilinear with ``align_corners=False``. Randomness comes from torch's global
generator, which DataLoader seeds per worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from celseg.config import DataConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Pair = tuple[torch.Tensor, "torch.Tensor | None"]


def _stats(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (3, 1, 1) if img.dim() == 3 else (1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=img.dtype, device=img.device).view(shape)
    std = torch.tensor(IMAGENET_STD, dtype=img.dtype, device=img.device).view(shape)
    return mean, std


def normalize(img: torch.Tensor) -> torch.Tensor:
    """(3, H, W) or (B, 3, H, W) in [0, 1] -> ImageNet-normalised."""
    mean, std = _stats(img)
    return (img - mean) / std


def denormalize(img: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`: back to [0, 1] (not clamped)."""
    mean, std = _stats(img)
    return img * std + mean


def to_unit_rgb(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised images -> float RGB clamped to [0, 1] (what a VLM takes)."""
    return denormalize(images.float()).clamp(0, 1)


def resize_pair(image: torch.Tensor, label: torch.Tensor | None, size: tuple[int, int]) -> Pair:
    """Resize image (3, H, W) bilinearly and label (H, W) by nearest pixel centre to ``size``."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image, label
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                          antialias=True)[0].clamp_(0.0, 1.0)
    if label is not None:
        label = F.interpolate(label[None, None].float(), size=size, mode="nearest-exact")[0, 0]
        label = label.long()
    return image, label


def _short_side_size(h: int, w: int, short: float) -> tuple[int, int]:
    scale = short / min(h, w)
    return max(int(round(h * scale)), 1), max(int(round(w * scale)), 1)


class Compose:
    def __init__(self, transforms: Sequence[Callable[..., Pair]]):
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None = None) -> Pair:
        for t in self.transforms:
            image, label = t(image, label)
        return image, label

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


class Resize:
    """Resize so the short side is ``short_side`` (aspect kept)."""

    def __init__(self, short_side: int):
        self.short_side = int(short_side)

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None = None) -> Pair:
        h, w = image.shape[-2:]
        return resize_pair(image, label, _short_side_size(h, w, self.short_side))


class RandomScale:
    """Resize by a factor in [min_scale, max_scale] of a base size (short side ``base``,
    or the image's own size when ``base`` is 0)."""

    def __init__(self, min_scale: float, max_scale: float, base: int = 0):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale, self.base = float(min_scale), float(max_scale), int(base)

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None = None) -> Pair:
        h, w = image.shape[-2:]
        s = self.min_scale + (self.max_scale - self.min_scale) * torch.rand(()).item()
        short = (self.base or min(h, w)) * s
        return resize_pair(image, label, _short_side_size(h, w, short))


class RandomCrop:
    """Crop ``size`` x ``size``; smaller images are padded (image 0, label ``ignore_index``)."""

    def __init__(self, size: int, ignore_index: int = 255):
        self.size, self.ignore_index = int(size), int(ignore_index)

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None = None) -> Pair:
        h, w = image.shape[-2:]
        ph, pw = max(self.size - h, 0), max(self.size - w, 0)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=0.0)
            if label is not None:
                label = F.pad(label, (0, pw, 0, ph), value=self.ignore_index)
            h, w = h + ph, w + pw
        y = int(torch.randint(0, h - self.size + 1, ()).item())
        x = int(torch.randint(0, w - self.size + 1, ()).item())
        image = image[:, y:y + self.size, x:x + self.size]
        if label is not None:
            label = label[y:y + self.size, x:x + self.size]
        return image, label


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None = None) -> Pair:
        if torch.rand(()).item() < self.p:
            image = image.flip(-1)
            label = label.flip(-1) if label is not None else None
        return image, label


class ColorJitter:
    """Brightness, contrast and saturation in [1 - s, 1 + s] (image only).

    No hue jitter: class names such as "red circle" make hue part of the label.
    """

    def __init__(self, strength: float):
        self.strength = float(strength)

    def _factor(self) -> float:
        return 1.0 + self.strength * (2.0 * torch.rand(()).item() - 1.0)

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None = None) -> Pair:
        if self.strength <= 0:
            return image, label
        image = image * self._factor()
        gray = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]
        c = self._factor()
        image = c * image + (1 - c) * gray.mean()
        s = self._factor()
        image = s * image + (1 - s) * gray
        return image.clamp(0.0, 1.0), label


class Normalize:
    def __call__(self, image: torch.Tensor, label: torch.Tensor | None = None) -> Pair:
        return normalize(image), label


def build_train_transform(cfg: DataConfig) -> Compose:
    """Random scale, crop ``cfg.crop_size`` (labels padded with 255), flip, jitter, normalise."""
    ops: list = [RandomScale(cfg.min_scale, cfg.max_scale, cfg.base_size),
                 RandomCrop(cfg.crop_size)]
    if cfg.flip:
        ops.append(RandomHorizontalFlip())
    if cfg.color_jitter > 0:
        ops.append(ColorJitter(cfg.color_jitter))
    ops.append(Normalize())
    return Compose(ops)


def build_eval_transform(cfg: DataConfig) -> Compose:
    """Optional resize of the short side to ``cfg.eval_size`` (0: keep), then normalise."""
    ops: list = []
    if cfg.eval_size > 0:
        ops.append(Resize(cfg.eval_size))
    ops.append(Normalize())
    return Compose(ops)
