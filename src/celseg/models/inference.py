"""From query predictions to a semantic map (shared by inference and the pixel-level loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def semantic_probs(
    pred_logits: torch.Tensor, pred_masks: torch.Tensor, has_background: bool
) -> torch.Tensor:
    """Aggregate query predictions into per-class scores.

    S(c, x) = sum_q softmax(z_q)[c] * sigmoid(M_q(x)); in baseline mode the softmax runs over
    C+1 columns and the no-object column is dropped afterwards. Not normalised over classes.

    Args:
        pred_logits: (B,Q,C) or (B,Q,C+1) when ``has_background``.
        pred_masks: (B,Q,h,w) mask logits.
    Returns:
        (B,C,h,w) scores in [0, Q].
    """
    probs = pred_logits.softmax(-1)
    if has_background:
        probs = probs[..., :-1]
    return torch.einsum("bqc,bqhw->bchw", probs, pred_masks.sigmoid())


def semantic_map(
    outputs: dict,
    out_size: tuple[int, int],
    seen_ids: torch.Tensor | list[int] | None = None,
    calibration: float = 0.0,
    has_background: bool | None = None,
) -> torch.Tensor:
    """Per-pixel class ids (B,H,W) long, in vocabulary index space.

    S from ``semantic_probs`` is bilinearly resized to ``out_size`` and normalised over classes
    (S / sum_c S) so that ``calibration`` is on a probability scale; seen-class probabilities
    (vocabulary indices ``seen_ids``) are lowered by ``calibration`` before the argmax, as
    ZegFormer/ZegCLIP do. ``has_background`` defaults to pred_logits having one column more than
    ``outputs["text_emb"]``.
    """
    logits, masks = outputs["pred_logits"], outputs["pred_masks"]
    if has_background is None:
        has_background = logits.shape[-1] == outputs["text_emb"].shape[0] + 1
    probs = semantic_probs(logits, masks, has_background)
    probs = F.interpolate(probs, size=tuple(out_size), mode="bilinear", align_corners=False)
    probs = probs / probs.sum(1, keepdim=True).clamp_min(1e-6)
    if seen_ids is not None and calibration:
        seen = torch.as_tensor(seen_ids, dtype=torch.long, device=probs.device)
        probs[:, seen] -= calibration
    return probs.argmax(1)
