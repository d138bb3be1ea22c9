"""Vectorised rasterisation of the synthetic "thing" shapes on a pixel-centre grid.

Each shape is an implicit unit shape (radius ~1 around the origin); a mask is computed only
inside the object's bounding box, so one object costs O(box area x polygon edges).
"""

from __future__ import annotations

import numpy as np

SHAPES = ("circle", "square", "triangle", "star")
# the second generated dataset's shapes (``--variant ov``)
OV_SHAPES = ("hexagon", "cross", "heart", "ring")
RING_INNER = 0.6  # inner radius of the ring, relative to its outer radius 1


def _regular(n: int, radius: float, start_deg: float = 90.0) -> np.ndarray:
    a = np.deg2rad(start_deg) + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)


def _star(points: int = 5, outer: float = 1.2, inner: float = 0.48) -> np.ndarray:
    a = np.pi / 2 + np.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


# Unit polygons, scaled so the shapes cover similar areas (circle of radius 1: area pi).
POLYGONS: dict[str, np.ndarray] = {
    "square": np.array([[-0.85, -0.85], [0.85, -0.85], [0.85, 0.85], [-0.85, 0.85]]),
    "triangle": _regular(3, 1.25),
    "star": _star(),
    "hexagon": _regular(6, 1.1),
    # a plus sign of arm half-width 0.38 and reach 1.1 (area ~ pi, like the others)
    "cross": np.array([[0.38, 0.38], [0.38, 1.1], [-0.38, 1.1], [-0.38, 0.38], [-1.1, 0.38],
                       [-1.1, -0.38], [-0.38, -0.38], [-0.38, -1.1], [0.38, -1.1], [0.38, -0.38],
                       [1.1, -0.38], [1.1, 0.38]]),
}


def inside_unit_shape(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of points ``(u, v)`` (any equal shapes) inside the unit ``shape``."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.15**2) & (r2 >= (1.15 * RING_INNER) ** 2)
    if shape == "heart":
        # the classic quartic heart (x^2 + y^2 - 1)^3 <= x^2 y^3, scaled to area ~ pi
        x, y = u / 0.95, v / 0.95 + 0.1
        return (x * x + y * y - 1.0) ** 3 <= x * x * y**3
    if shape not in POLYGONS:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES + OV_SHAPES)}")
    verts = POLYGONS[shape]
    x0, y0 = verts[:, 0], verts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    shp = (-1,) + (1,) * u.ndim
    x0, y0, x1, y1 = (a.reshape(shp) for a in (x0, y0, x1, y1))
    # even-odd rule: count crossings of a ray towards +u with every edge
    straddles = (y0 > v) != (y1 > v)
    dy = np.where(y1 == y0, 1.0, y1 - y0)
    x_cross = x0 + (v - y0) * (x1 - x0) / dy
    crossings = straddles & (u < x_cross)
    return (crossings.sum(axis=0) % 2) == 1


def shape_mask(
    shape: str, cy: float, cx: float, radius: float, angle: float, size: int,
    aspect: float = 1.0,
) -> tuple[slice, slice, np.ndarray] | None:
    """Rasterise one object on a ``size`` x ``size`` grid.

    Returns ``(rows, cols, mask)`` with ``mask`` a bool (h, w) array for ``image[rows, cols]``,
    or None when the object lies entirely outside the image. ``angle`` is in radians and
    ``aspect`` stretches the shape along its own first axis.
    """
    reach = radius * 1.3 * max(aspect, 1.0)
    y0, y1 = max(int(np.floor(cy - reach)), 0), min(int(np.ceil(cy + reach)) + 1, size)
    x0, x1 = max(int(np.floor(cx - reach)), 0), min(int(np.ceil(cx + reach)) + 1, size)
    if y0 >= y1 or x0 >= x1:
        return None
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
    c, s = np.cos(angle), np.sin(angle)
    # rotate the grid by -angle into the shape's frame; v grows upwards
    u = (c * dx + s * dy) / (radius * aspect)
    v = (s * dx - c * dy) / radius
    mask = inside_unit_shape(shape, u, v)
    if not mask.any():
        return None
    return slice(y0, y1), slice(x0, x1), mask
