"""Stuff textures of the synthetic benchmark: real photos shipped with scikit-image and
procedural patterns, each returned as a zero-mean, unit-variance (H, W) float32 pattern that
``tint`` turns into an RGB region."""

from __future__ import annotations

from functools import cache

import numpy as np
from PIL import Image

REAL_TEXTURES = ("grass", "brick", "gravel")
TEXTURES = REAL_TEXTURES + ("waves", "sand", "wood")
OV_TEXTURES = ("snow", "carpet", "cobblestone")  # the second generated dataset's (--variant ov)


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
    if kind in OV_TEXTURES:
        return _ov_pattern(kind, size, rng, scale)
    raise ValueError(f"unknown texture {kind!r}; known: {', '.join(TEXTURES + OV_TEXTURES)}")


def _ov_pattern(kind: str, size: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    if kind == "snow":
        # soft drifts with sparse bright sparkles
        x = smooth_noise(rng, size, 3) + 0.35 * smooth_noise(rng, size, 16 * scale)
        x = x + 2.5 * (rng.random((size, size)) > 0.985)
        return _standardise(x)
    if kind == "carpet":
        # a tight woven grid of loops plus fibre noise
        along, across = _coords(size, rng)
        freq = rng.uniform(28, 36) * scale
        x = np.sin(2 * np.pi * freq * along) * np.sin(2 * np.pi * freq * across)
        x = x + 0.9 * rng.standard_normal((size, size), dtype=np.float32)
        return _standardise(x + 0.4 * smooth_noise(rng, size, 5))
    return cobblestone(size, rng, scale)


def cobblestone(size: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Rounded stones: Voronoi cells of jittered grid points, each its own brightness, with
    dark mortar where the nearest two points are nearly equidistant."""
    cells = max(int(round(rng.uniform(6, 9) * scale)), 2)
    g = (np.arange(cells) + 0.5) / cells
    py, px = np.meshgrid(g, g, indexing="ij")
    pts = np.stack([py.ravel(), px.ravel()], 1) + rng.uniform(-0.3, 0.3, (cells * cells, 2)) / cells
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    d = np.sqrt((t[:, None, None] - pts[None, None, :, 0]) ** 2
                + (t[None, :, None] - pts[None, None, :, 1]) ** 2)  # (size, size, cells^2)
    part = np.partition(d, 1, axis=2)
    edge = (part[..., 1] - part[..., 0]) * cells  # 0 on the mortar lines
    shade = rng.uniform(-1, 1, cells * cells)[d.argmin(axis=2)]
    x = 0.6 * shade + np.tanh(edge / 0.12) + 0.3 * smooth_noise(rng, size, 20 * scale)
    return _standardise(x)


def tint(pat: np.ndarray, rgb: np.ndarray, contrast: float) -> np.ndarray:
    """Colour a pattern: (H, W) pattern, (3,) RGB in [0, 1] -> (H, W, 3) float32 in [0, 1]."""
    out = (1.0 + np.float32(contrast) * pat)[..., None] * rgb.astype(np.float32)
    return np.clip(out, 0.0, 1.0, out=out)
