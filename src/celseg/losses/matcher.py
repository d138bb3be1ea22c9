"""Hungarian matching of queries to the ground-truth segments of each image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from celseg.losses.mask_terms import (
    dice_loss,
    points_for,
    read_bilinear,
    read_nearest,
    sigmoid_bce,
    uniform_coords,
)


def pad_targets(targets: list[dict[str, Tensor]], device: torch.device) -> tuple[Tensor, Tensor]:
    """Stack per-image targets: labels (B,Kmax) long (-1 padding) and masks (B,Kmax,H,W) float
    (zero padding); Kmax >= 1."""
    kmax = max([int(t["labels"].numel()) for t in targets] + [1])
    size = targets[0]["masks"].shape[-2:]
    labels = torch.full((len(targets), kmax), -1, dtype=torch.long, device=device)
    masks = torch.zeros(len(targets), kmax, *size, device=device)
    for b, t in enumerate(targets):
        k = int(t["labels"].numel())
        labels[b, :k] = t["labels"].to(device)
        masks[b, :k] = t["masks"].to(device)
    return labels, masks


class HungarianMatcher(nn.Module):
    """cost(q, k) = cost_class * (-softmax(z_q)[y_k]) + cost_mask * bce(M_q, m_k)
    + cost_dice * dice(M_q, m_k), ignore pixels excluded from the mask terms.

    The softmax runs over every column of ``pred_logits`` (C+1 in background_embedding mode). With
    ``num_points`` > 0 the mask terms are read at that many uniform points per image
    (``mask_terms.points_for``), and the cost matrices of the whole batch are one set of tensor
    ops; only the assignment itself runs per image, on the CPU. ``num_points`` = 0 compares at
    every pixel of the target (predictions upsampled), one image at a time.
    """

    def __init__(self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
                 num_points: int = 0) -> None:
        super().__init__()
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    def batch_costs(self, logits: Tensor, pred: Tensor, labels: Tensor, tgt: Tensor,
                    weights: Tensor) -> Tensor:
        """logits (B,Q,C'), pred (B,Q,P) mask logits at points, labels (B,K) (-1: padding),
        tgt (B,K,P) binary, weights (B,1,P) -> (B,Q,K) costs."""
        prob = logits.float().softmax(-1)
        index = labels.clamp_min(0)[:, None].expand(-1, prob.shape[1], -1)
        cost = -self.cost_class * prob.gather(2, index)
        cost = cost + self.cost_mask * sigmoid_bce(pred, tgt, weights, pairwise=True)
        return cost + self.cost_dice * dice_loss(pred, tgt, weights, pairwise=True)

    def points(self, masks: Tensor, tmasks: Tensor, valid: Tensor) -> tuple[Tensor, ...]:
        """masks (B,Q,h,w), tmasks (B,K,H,W), valid (B,H,W) -> pred (B,Q,P), tgt (B,K,P),
        weights (B,1,P): uniform points, or every target pixel when ``num_points`` is 0."""
        count = points_for(self.num_points, masks.shape[-2:])
        if count == 0:
            if masks.shape[-2:] != tmasks.shape[-2:]:
                masks = F.interpolate(masks.float(), size=tmasks.shape[-2:], mode="bilinear",
                                      align_corners=False)
            return masks.float().flatten(2), tmasks.flatten(2), valid.float().flatten(1)[:, None]
        coords = uniform_coords(masks.shape[0], count, masks.device)
        return (read_bilinear(masks, coords), read_nearest(tmasks, coords),
                read_nearest(valid[:, None], coords).float())

    def cost_matrix(self, logits: Tensor, masks: Tensor, target: dict[str, Tensor],
                    valid: Tensor) -> Tensor:
        """One image: logits (Q,C'), masks (Q,h,w), target labels (K,) and masks (K,H,W),
        valid (H,W) -> (Q,K)."""
        pred, tgt, w = self.points(masks[None], target["masks"][None].float(), valid[None])
        return self.batch_costs(logits[None], pred, target["labels"][None], tgt, w)[0]

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict[str, Tensor]], valid: Tensor,
                padded: tuple[Tensor, Tensor] | None = None) -> list[tuple[Tensor, Tensor]]:
        """outputs: pred_logits (B,Q,C'), pred_masks (B,Q,h,w); valid (B,H,W) bool; padded:
        :func:`pad_targets` of ``targets`` when the caller has it already.
        Returns per image (query indices, target indices), each (min(Q,K),) long, on the CPU."""
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        counts = [int(t["labels"].numel()) for t in targets]
        if self.num_points > 0:
            labels, tmasks = padded if padded is not None else pad_targets(targets, masks.device)
            labels, tmasks = labels.to(masks.device), tmasks.to(masks.device)
            pred, tgt, w = self.points(masks, tmasks, valid.to(masks.device))
            costs = self.batch_costs(logits, pred, labels, tgt, w).cpu()  # one transfer
        else:  # every pixel: one image at a time keeps the memory at one image's
            costs = [self.cost_matrix(logits[b], masks[b], t, valid[b]) if k else None
                     for b, (t, k) in enumerate(zip(targets, counts, strict=True))]
        return [self._assign(costs[b], k) for b, k in enumerate(counts)]

    @staticmethod
    def _assign(cost: Tensor | None, count: int) -> tuple[Tensor, Tensor]:
        if not count:
            empty = torch.zeros(0, dtype=torch.long)
            return empty, empty
        cost = torch.nan_to_num(cost[:, :count].float(), nan=1e6, posinf=1e6, neginf=-1e6)
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)
