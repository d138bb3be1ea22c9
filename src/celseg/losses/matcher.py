"""Hungarian matching of queries to the ground-truth segments of each image."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from celseg.losses.mask_terms import dice_loss, sample_masks, sigmoid_bce


class HungarianMatcher(nn.Module):
    """cost(q, k) = cost_class * (-softmax(z_q)[y_k]) + cost_mask * bce(M_q, m_k)
    + cost_dice * dice(M_q, m_k), ignore pixels excluded from the mask terms.

    The softmax runs over every column of ``pred_logits`` (C+1 in baseline mode).
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        num_points: int = 0,
    ) -> None:
        super().__init__()
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    def cost_matrix(
        self,
        logits: torch.Tensor,
        masks: torch.Tensor,
        target: dict[str, torch.Tensor],
        valid: torch.Tensor,
    ) -> torch.Tensor:
        """logits (Q,C'), masks (Q,h,w), target labels (K,), masks (K,H,W), valid (H,W) -> (Q,K)"""
        prob = logits.float().softmax(-1)
        cost = -self.cost_class * prob[:, target["labels"]]
        pred, tgt, w = sample_masks(masks, target["masks"], valid, self.num_points)
        cost = cost + self.cost_mask * sigmoid_bce(pred, tgt, w, pairwise=True)
        cost = cost + self.cost_dice * dice_loss(pred, tgt, w, pairwise=True)
        return cost

    @torch.no_grad()
    def forward(
        self, outputs: dict, targets: list[dict[str, torch.Tensor]], valid: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """outputs: pred_logits (B,Q,C'), pred_masks (B,Q,h,w); valid (B,H,W) bool.
        Returns per image (query indices, target indices), each (min(Q,K),) long."""
        indices = []
        for b, target in enumerate(targets):
            if target["labels"].numel() == 0:
                empty = torch.zeros(0, dtype=torch.long)
                indices.append((empty, empty))
                continue
            cost = self.cost_matrix(
                outputs["pred_logits"][b], outputs["pred_masks"][b], target, valid[b]
            )
            cost = torch.nan_to_num(cost, nan=1e6, posinf=1e6, neginf=-1e6).cpu()
            rows, cols = linear_sum_assignment(cost.numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.long),
                            torch.as_tensor(cols, dtype=torch.long)))
        return indices
