"""The result of segmenting one image, and the pictures and files made from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True, eq=False)
class Segmentation:
    """One image's labels.

    Attributes:
        image: (H, W, 3) uint8, the image as segmented.
        labels: (H, W) uint8 positions in ``class_names``.
        class_names: the vocabulary, in the order the positions refer to.
        probs: (C, H, W) float32 class probabilities, when asked for (else None).
        name: the file stem :meth:`save` uses (the input's stem, or "segmentation").
        source: the file the image came from, if any (never written to).
    """

    image: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    probs: np.ndarray | None = None
    name: str = "segmentation"
    source: str | None = None

    def shares(self) -> dict[str, float]:
        """Percent of the pixels labelled with each class, every class in vocabulary order."""
        counts = np.bincount(self.labels.reshape(-1), minlength=len(self.class_names))
        total = max(self.labels.size, 1)
        return {n: 100.0 * float(c) / total
                for n, c in zip(self.class_names, counts[: len(self.class_names)], strict=True)}

    def overlay(self, alpha: float = 0.5, min_side: int = 0) -> Image.Image:
        """image | labels blended over it | legend of the classes present; images smaller than
        ``min_side`` are enlarged (nearest neighbour) for display."""
        from celseg.data.classes import default_color
        from celseg.viz.overlay import legend_image, overlay

        factor = max(1, -(-min_side // max(1, min(self.labels.shape))))
        image, labels = (a.repeat(factor, axis=0).repeat(factor, axis=1)
                         for a in (self.image, self.labels))
        palette = np.asarray([default_color(i) for i in range(len(self.class_names))],
                             dtype=np.uint8)
        present = sorted(int(i) for i in np.unique(labels))
        legend = legend_image(list(self.class_names), palette, present)
        return side_by_side([image, overlay(image, labels, palette, alpha)], legend)

    def save(self, out_dir: str | Path, name: str | None = None, overwrite: bool = False
             ) -> tuple[Path, Path]:
        """Write ``OUT/NAME.png`` (the labels, 8-bit grey) and ``OUT/NAME_overlay.png``
        atomically; returns both paths. A file celseg did not write is replaced only with
        ``overwrite``, and the source image never."""
        from celseg.io.atomic import atomic_paths
        from celseg.io.outputs import OutputGuard

        label_path, overlay_path = output_paths(out_dir, name or self.name)
        OutputGuard("save", overwrite).read_files(self.source).claim(
            files=[label_path, overlay_path])
        pictures = [Image.fromarray(np.ascontiguousarray(self.labels, np.uint8)), self.overlay()]
        with atomic_paths(label_path, overlay_path) as temps:
            for picture, tmp in zip(pictures, temps, strict=True):
                picture.save(tmp, format="PNG")  # named: no scan of every PIL plugin
        return label_path, overlay_path


def output_paths(out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """(label PNG, overlay PNG) that :meth:`Segmentation.save` writes for ``name``."""
    return Path(out_dir) / f"{name}.png", Path(out_dir) / f"{name}_overlay.png"


def side_by_side(images: list[np.ndarray], legend: np.ndarray) -> Image.Image:
    """Images in a row with the legend to their right (top-aligned, white background)."""
    legend = legend[..., :3] if legend.ndim == 3 else np.repeat(legend[..., None], 3, axis=2)
    parts = [*images, legend]
    height = max(p.shape[0] for p in parts)
    width = sum(p.shape[1] for p in parts) + 4 * (len(parts) - 1)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    x = 0
    for p in parts:
        canvas[: p.shape[0], x: x + p.shape[1]] = p[..., :3]
        x += p.shape[1] + 4
    return Image.fromarray(canvas)
