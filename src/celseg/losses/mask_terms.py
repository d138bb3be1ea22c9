"""Sigmoid BCE and dice between mask logits and binary targets, and the points they are read at.

Both terms take ``pairwise``: ``True`` gives the (..., N, K) cost of every prediction against
every target (the matcher), ``False`` the (..., N) loss of row-aligned pairs (the criterion).
Points are weighted by ``weights``: 1 on labelled pixels, 0 on ignore pixels, so ignored pixels
add nothing to either term. Pairwise, the weights are per point, (P,) or (..., 1, P); row-aligned,
they may also be per pair, (..., N, P).

    bce(x, t)  = sum_p w_p [t_p softplus(-x_p) + (1 - t_p) softplus(x_p)] / max(sum_p w_p, 1)
               = sum_p w_p [softplus(x_p) - t_p x_p] / max(sum_p w_p, 1)
                 (softplus(-x) = softplus(x) - x: one softplus and one contraction with t)
    dice(x, t) = 1 - (2 sum_p w_p s_p t_p + 1) / (sum_p w_p s_p + sum_p w_p t_p + 1),
                 s_p = sigmoid(x_p)

Points (Mask2Former): coordinates are (x, y) in [0, 1) of the image. Predictions (stride 4) are
read bilinearly there, targets and validity at the nearest pixel of their full resolution. The
number of points follows the mask size: at most the h*w pixels of the predicted mask
(:func:`points_for`). The matcher uses uniform points; the loss uses importance sampling
(:func:`importance_coords`): ``oversample`` x P uniform candidates, the ``importance`` share of P
taken where the prediction is most uncertain (|logit| smallest), the rest uniform.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _contract(a: Tensor, b: Tensor, pairwise: bool) -> Tensor:
    """Sum over points: (...,N,P),(...,K,P) -> (...,N,K) if pairwise, else -> (...,N)."""
    return torch.einsum("...np,...kp->...nk" if pairwise else "...np,...np->...n", a, b)


def _column(weights: Tensor) -> Tensor:
    """Per-point weights (P,) or (...,1,P) as a column (...,P,1) for a matrix-vector product."""
    return (weights[None] if weights.dim() == 1 else weights).transpose(-1, -2)


def _per_point_norm(weights: Tensor, pairwise: bool) -> Tensor:
    total = weights.sum(-1).clamp_min(1.0)
    return total[..., None] if pairwise else total


def sigmoid_bce(logits: Tensor, targets: Tensor, weights: Tensor, pairwise: bool = False) -> Tensor:
    """Mean sigmoid BCE over weighted points. logits (...,N,P), targets (...,K,P) or (...,N,P)."""
    if pairwise:  # per-point weights fold into the (small) targets and a matrix-vector product
        neg = F.softplus(logits) @ _column(weights)  # (...,N,1): sum_p w_p softplus
        total = neg - _contract(logits, targets * weights, True)
    else:
        total = (F.softplus(logits) * weights).sum(-1) - _contract(logits * weights, targets,
                                                                   False)
    return total / _per_point_norm(weights, pairwise)


def dice_loss(logits: Tensor, targets: Tensor, weights: Tensor, pairwise: bool = False) -> Tensor:
    """Dice loss with +1 smoothing. logits (...,N,P), targets (...,K,P) or (...,N,P)."""
    probs = logits.sigmoid()
    weighted_targets = targets * weights
    tsum = weighted_targets.sum(-1)
    if pairwise:  # one pass over the (N,P) probabilities: [t_k * w ; w] as K+1 columns
        columns = torch.cat([weighted_targets, _column(weights).transpose(-1, -2).expand(
            *weighted_targets.shape[:-2], 1, -1)], dim=-2)
        both = probs @ columns.transpose(-1, -2)  # (...,N,K+1)
        inter, psum = both[..., :-1], both[..., -1:]
        denom = psum + tsum[..., None, :]  # (...,N,1) + (...,1,K)
    else:
        inter = _contract(probs, weighted_targets, False)
        denom = (probs * weights).sum(-1) + tsum
    return 1 - (2 * inter + 1) / (denom + 1)


# --- points --------------------------------------------------------------------------------------

def points_for(requested: int, mask_hw: tuple[int, int]) -> int:
    """Points per mask: ``requested`` capped at the predicted mask's pixel count (0: none)."""
    return min(int(requested), int(mask_hw[0]) * int(mask_hw[1])) if requested > 0 else 0


def uniform_coords(n: int, num_points: int, device: torch.device) -> Tensor:
    """(n, P, 2) uniform (x, y) coordinates in [0, 1)."""
    return torch.rand(n, num_points, 2, device=device)


def read_bilinear(maps: Tensor, coords: Tensor) -> Tensor:
    """maps (B,N,h,w), coords (B,P,2) -> (B,N,P) bilinear reads (``align_corners=False``)."""
    grid = (coords * 2 - 1)[:, None]  # (B,1,P,2) in [-1, 1)
    return F.grid_sample(maps.float(), grid, mode="bilinear", align_corners=False)[:, :, 0]


def nearest_index(coords: Tensor, height: int, width: int) -> Tensor:
    """(...,P,2) coordinates -> (...,P) long flat index of the nearest pixel of an H x W map."""
    ix = (coords[..., 0] * width).long().clamp_(0, width - 1)
    iy = (coords[..., 1] * height).long().clamp_(0, height - 1)
    return iy * width + ix


def read_nearest(maps: Tensor, coords: Tensor) -> Tensor:
    """maps (B,K,H,W) any dtype, coords (B,P,2) -> (B,K,P) values at the nearest pixel."""
    b, k, height, width = maps.shape
    flat = nearest_index(coords, height, width)[:, None].expand(b, k, -1)  # (B,K,P)
    return maps.flatten(2).gather(2, flat)


@torch.no_grad()
def importance_coords(logits: Tensor, num_points: int, oversample: float = 3.0,
                      importance: float = 0.75) -> Tensor:
    """(N,h,w) mask logits -> (N,P,2) coordinates, the ``importance`` share where |logit| is
    smallest among ``oversample`` x P uniform candidates, the rest uniform."""
    n = logits.shape[0]
    candidates = uniform_coords(n, max(int(oversample * num_points), num_points), logits.device)
    uncertainty = -read_bilinear(logits[:, None], candidates)[:, 0].abs()  # (N, P')
    k = int(importance * num_points)
    top = uncertainty.topk(k, dim=1, sorted=False).indices
    chosen = candidates.gather(1, top[..., None].expand(-1, -1, 2))
    rest = uniform_coords(n, num_points - k, logits.device)
    return torch.cat([chosen, rest], dim=1)

