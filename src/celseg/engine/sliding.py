"""Sliding-window inference for images larger than the training crop.

Windows of ``window_size`` x ``window_size`` are placed every ``window_stride`` pixels; the last
window of a row or column is shifted back to end at the image border (as mmsegmentation does), so
every pixel is covered and no window hangs over the edge. An image smaller than a window is padded
at the bottom / right with ``pad_value`` (0 = the mean colour after ImageNet normalisation) and the
padding is cropped off the result. Predictions of overlapping windows are averaged per pixel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets covering ``[0, length)`` with windows of ``window`` (``length >= window``)."""
    if stride <= 0 or window <= 0:
        raise ValueError(f"window ({window}) and stride ({stride}) must be positive")
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return sorted(set(starts))


def sliding_window(predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                   window_size: int, window_stride: int, pad_value: float = 0.0) -> torch.Tensor:
    """Average ``predict`` over sliding windows.

    Args:
        predict: (B,3,w,w) -> (B,C,h',w') scores (logits or probabilities); outputs at another
            resolution are resized bilinearly to the window.
        images: (B,3,H,W) normalised images.
    Returns:
        (B,C,H,W) scores averaged over the windows covering each pixel.
    """
    b, _, h, w = images.shape
    ph, pw = max(h, window_size), max(w, window_size)
    if (ph, pw) != (h, w):
        images = F.pad(images, (0, pw - w, 0, ph - h), value=pad_value)
    total: torch.Tensor | None = None
    count = images.new_zeros(1, 1, ph, pw)
    for y in window_starts(ph, window_size, window_stride):
        for x in window_starts(pw, window_size, window_stride):
            crop = images[:, :, y:y + window_size, x:x + window_size]
            out = predict(crop)
            if out.shape[-2:] != crop.shape[-2:]:
                out = F.interpolate(out, size=crop.shape[-2:], mode="bilinear",
                                    align_corners=False)
            if total is None:
                total = out.new_zeros(b, out.shape[1], ph, pw)
            total[:, :, y:y + window_size, x:x + window_size] += out
            count[:, :, y:y + window_size, x:x + window_size] += 1
    assert total is not None
    return (total / count)[:, :, :h, :w]


def path_predictor(model: torch.nn.Module, text_emb: torch.Tensor, path: object,
                   protocols: tuple[str, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``predict`` for ``sliding_window`` from a ``Segmenter`` and its inference path
    (``celseg.models.inference.SemanticInference``): (B,3,w,w) normalised -> (B,P*V,w,w), the
    class probabilities of each of the P ``protocols`` resized to the window, normalised over
    classes and concatenated in order."""
    from celseg.data.transforms import to_unit_rgb
    from celseg.models.inference import class_probs

    @torch.no_grad()
    def predict(crop: torch.Tensor) -> torch.Tensor:
        outputs = model(crop, text_emb)
        scores = path.scores(outputs, to_unit_rgb(crop), protocols)
        size = tuple(crop.shape[-2:])
        return torch.cat([class_probs(scores[p], size) for p in protocols], dim=1)

    return predict
