"""Stuff textures of the synthetic benchmark: real photos shipped with scikit-image and
procedural patterns, each returned as a zero-mean, unit-variance (H, W) float32 pattern that
``tint`` turns into an RGB region."""

from __future__ import annotations

from functools import cache

import numpy as np
from PIL import Image

REAL_TEXTURES = ("grass", "brick", "gravel")
TEXTURES = REAL_TEXTURES + ("waves", "sand", "wood")


@cache
def _real(name: str) -> np.ndarray:
    import skimage.data

    tex = getattr(skimage.data, name)().astype(np.float32)
    if tex.ndim == 3:
        tex = tex.mean(axis=2)
    return (tex - tex.mean()) / (tex.std() + 1e-6)


def _standardise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return (x - x.mean()) / (x.std() + 1e-6)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise: a (cells+1)^2 random grid upsampled bicubically to (size, size)."""
    cells = max(int(cells), 1)
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    up = Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC)
    return np.asarray(up, dtype=np.float32)


def _real_crop(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    tex = _real(name)
    # sample at scale 1-2 texture pixels per image pixel (at 128 px), so grains stay visible
    step = int(rng.integers(1, 3)) if size * 2 <= tex.shape[0] else 1
    span = size * step
    if span > tex.shape[0]:
        reps = -(-span // tex.shape[0])
        tex = np.tile(tex, (reps, reps))
    y = int(rng.integers(0, tex.shape[0] - span + 1))
    x = int(rng.integers(0, tex.shape[1] - span + 1))
    crop = tex[y:y + span:step, x:x + span:step]
    crop = np.rot90(crop, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def _coords(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in [0, 1) rotated by a random angle: (along, across)."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    a = rng.uniform(0, np.pi)
    c, s = np.float32(np.cos(a)), np.float32(np.sin(a))
    return c * t[None, :] + s * t[:, None], -s * t[None, :] + c * t[:, None]


def pattern(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) float32 texture pattern with mean 0 and standard deviation 1."""
    if kind in REAL_TEXTURES:
        return _real_crop(kind, size, rng)
    scale = size / 128.0
    if kind == "waves":
        along, across = _coords(size, rng)
        warp = smooth_noise(rng, size, 3)
        freq = rng.uniform(7, 11)
        x = np.sin(2 * np.pi * (freq * across + 0.35 * warp))
        x = x + 0.4 * smooth_noise(rng, size, 12 * scale)
        return _standardise(x)
    if kind == "sand":
        x = smooth_noise(rng, size, 24 * scale)
        x = x + 0.8 * rng.standard_normal((size, size), dtype=np.float32)
        x = x + 0.6 * smooth_noise(rng, size, 4)
        return _standardise(x)
    if kind == "wood":
        along, across = _coords(size, rng)
        warp = smooth_noise(rng, size, 2)
        grain = smooth_noise(rng, size, 40 * scale)
        freq = rng.uniform(10, 16)
        x = np.sin(2 * np.pi * (freq * across + 0.6 * warp + 0.05 * grain))
        plank = np.floor(along * rng.uniform(2.5, 4.0))
        x = x + 0.5 * np.sin(7.3 * plank) + 0.3 * grain
        return _standardise(x)
    raise ValueError(f"unknown texture {kind!r}; known: {', '.join(TEXTURES)}")


def tint(pat: np.ndarray, rgb: np.ndarray, contrast: float) -> np.ndarray:
    """Colour a pattern: (H, W) pattern, (3,) RGB in [0, 1] -> (H, W, 3) float32 in [0, 1]."""
    out = (1.0 + np.float32(contrast) * pat)[..., None] * rgb.astype(np.float32)
    return np.clip(out, 0.0, 1.0, out=out)
