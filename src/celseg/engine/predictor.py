"""Segment arbitrary images with an arbitrary list of class names.

For each image ``NAME.EXT`` writes ``OUT/NAME.png`` (uint8 label ids in the order of the given
class names) and ``OUT/NAME_overlay.png`` (image | overlay, with a legend of the classes that
appear).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from celseg.data.classes import default_color
from celseg.engine.evaluator import pad_batch
from celseg.errors import DataError


def parse_class_names(text: str) -> list[str]:
    """``"cat, dog,road"`` -> ``["cat", "dog", "road"]``; empty or duplicate names are errors."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise DataError(f"no class names in {text!r}; give e.g. --classes \"cat,dog,road\"")
    if len(names) > 255:
        raise DataError(f"{len(names)} class names; label PNGs hold at most 255")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"duplicate class names {dup}")
    return names


def load_rgb(path: str | Path, max_size: int = 0) -> np.ndarray:
    """(H,W,3) uint8; the longer side is shrunk to ``max_size`` when > 0."""
    try:
        img = Image.open(path).convert("RGB")
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc
    if max_size and max(img.size) > max_size:
        scale = max_size / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.BILINEAR)
    return np.asarray(img)


@torch.no_grad()
def segment(model: nn.Module, image: np.ndarray, text_emb: torch.Tensor,
            calibration: float = 0.0, seen_ids: list[int] | None = None) -> np.ndarray:
    """(H,W) uint8 vocabulary indices for an (H,W,3) uint8 image and (C,D) text embeddings."""
    from celseg.data.transforms import normalize
    from celseg.models.inference import semantic_map

    device = next(model.parameters()).device
    x = torch.tensor(image).permute(2, 0, 1).float().div(255.0)  # copy: arrays may be read-only
    x = normalize(x).unsqueeze(0)
    h, w = x.shape[-2:]
    x, _ = pad_batch(x)
    outputs = model(x.to(device), text_emb.to(device))
    pred = semantic_map(outputs, tuple(x.shape[-2:]), seen_ids=seen_ids, calibration=calibration,
                        has_background=bool(model.has_background))
    return pred[0, :h, :w].to(torch.uint8).cpu().numpy()


def predict_images(model: nn.Module, paths: list[str | Path], class_names: list[str],
                   vlm: object, out_dir: str | Path, max_size: int = 0,
                   cache_dir: str | Path | None = None, alpha: float = 0.5) -> list[Path]:
    """Write a label PNG and an overlay per image; returns the label PNG paths.

    ``vlm`` gives the text embeddings of ``class_names`` (through the disk cache); it must be the
    text space the model was trained with.
    """
    from celseg.viz.overlay import legend_image, overlay
    from celseg.vlm.cache import text_embeddings

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text_emb = text_embeddings(vlm, list(class_names), cache_dir=cache_dir)  # (C, D)
    palette = np.asarray([default_color(i) for i in range(len(class_names))], dtype=np.uint8)
    model.eval()
    written = []
    for path in paths:
        path = Path(path)
        image = load_rgb(path, max_size)
        label = segment(model, image, text_emb)
        label_path = out_dir / f"{path.stem}.png"
        Image.fromarray(label, mode="L").save(label_path)
        ids = sorted(int(i) for i in np.unique(label))
        blend = overlay(image, label, palette, alpha)
        legend = legend_image(list(class_names), palette, ids)
        _side_by_side([image, blend], np.asarray(legend)).save(out_dir / f"{path.stem}_overlay.png")
        written.append(label_path)
    return written


def _side_by_side(images: list[np.ndarray], legend: np.ndarray) -> Image.Image:
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
