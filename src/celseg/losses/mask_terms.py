"""Sigmoid BCE and dice between mask logits and binary targets, written once.

Both terms take ``pairwise``: ``True`` gives the (N, K) cost of every prediction against every
target (the matcher), ``False`` the (N,) loss of row-aligned pairs (the criterion). Points are
weighted by ``weights`` (P,): 1 on labelled pixels, 0 on ignore pixels, so ignored pixels add
nothing to either term.

    bce(x, t)  = sum_p w_p [t_p softplus(-x_p) + (1 - t_p) softplus(x_p)] / sum_p w_p
    dice(x, t) = 1 - (2 sum_p w_p s_p t_p + 1) / (sum_p w_p s_p + sum_p w_p t_p + 1),
                 s_p = sigmoid(x_p)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _contract(a: torch.Tensor, b: torch.Tensor, pairwise: bool) -> torch.Tensor:
    """Sum over points: (N,P),(K,P) -> (N,K) if pairwise, else (N,P),(N,P) -> (N,)."""
    return torch.einsum("np,kp->nk" if pairwise else "np,np->n", a, b)


def sigmoid_bce(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, pairwise: bool = False
) -> torch.Tensor:
    """Mean sigmoid BCE over weighted points. logits (N,P), targets (K,P) or (N,P), weights (P,)."""
    pos = F.softplus(-logits) * weights  # -log sigmoid(x)
    neg = F.softplus(logits) * weights  # -log (1 - sigmoid(x))
    total = _contract(pos, targets, pairwise) + _contract(neg, 1 - targets, pairwise)
    return total / weights.sum().clamp_min(1.0)


def dice_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, pairwise: bool = False
) -> torch.Tensor:
    """Dice loss with +1 smoothing. logits (N,P), targets (K,P) or (N,P), weights (P,)."""
    probs = logits.sigmoid() * weights
    inter = _contract(probs, targets, pairwise)
    psum, tsum = probs.sum(-1), targets @ weights
    denom = psum[:, None] + tsum[None, :] if pairwise else psum + tsum
    return 1 - (2 * inter + 1) / (denom + 1)


def sample_masks(
    pred_masks: torch.Tensor,
    target_masks: torch.Tensor,
    valid: torch.Tensor,
    num_points: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Put predictions and targets on common points.

    Args:
        pred_masks: (N,h,w) logits (stride 4).
        target_masks: (K,H,W) binary.
        valid: (H,W) bool, False on ignore pixels.
        num_points: 0 -> every pixel at target resolution (predictions bilinearly upsampled);
            > 0 -> that many uniformly random points (predictions bilinearly sampled, targets and
            validity read at the nearest pixel).
    Returns:
        (N,P) logits, (K,P) targets, (P,) float weights.
    """
    pred_masks = pred_masks.float()
    height, width = target_masks.shape[-2:]
    if num_points <= 0:
        if pred_masks.shape[-2:] != (height, width):
            pred_masks = F.interpolate(
                pred_masks[None], size=(height, width), mode="bilinear", align_corners=False
            )[0]
        return pred_masks.flatten(1), target_masks.flatten(1).float(), valid.flatten().float()
    coords = torch.rand(num_points, 2, device=pred_masks.device)  # (P, 2) as (x, y) in [0, 1)
    grid = (coords * 2 - 1).view(1, 1, num_points, 2)
    pred = F.grid_sample(pred_masks[None], grid, mode="bilinear", align_corners=False)[0, :, 0]
    ix = (coords[:, 0] * width).long().clamp_max(width - 1)
    iy = (coords[:, 1] * height).long().clamp_max(height - 1)
    return pred, target_masks[:, iy, ix].float(), valid[iy, ix].float()
