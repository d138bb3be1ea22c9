"""Hungarian matching of queries to the ground-truth segments of each image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from celseg.losses.mask_terms import (
    dice_loss,
    nearest_index,
    points_for,
    read_nearest,
    sigmoid_bce,
    uniform_coords,
)

UNMATCHABLE = -1  # label of a padding slot; never equal to a pixel's label


def pad_labels(targets: list[dict[str, Tensor]], device: torch.device) -> Tensor:
    """(B,Kmax) long segment labels, ``UNMATCHABLE`` padding; Kmax >= 1."""
    kmax = max([int(t["labels"].numel()) for t in targets] + [1])
    labels = torch.full((len(targets), kmax), UNMATCHABLE, dtype=torch.long, device=device)
    for b, t in enumerate(targets):
        labels[b, : t["labels"].numel()] = t["labels"].to(device)
    return labels


def label_map_of(targets: list[dict[str, Tensor]], valid: Tensor, ignore: int) -> Tensor:
    """(B,H,W) vocabulary label map from per-image segment masks, ``ignore`` off ``valid``."""
    out = torch.full(valid.shape, ignore, dtype=torch.long, device=valid.device)
    for b, t in enumerate(targets):
        for label, mask in zip(t["labels"], t["masks"], strict=True):
            out[b][mask.to(valid.device) > 0.5] = int(label)
    return torch.where(valid, out, torch.full_like(out, ignore))


def segments_at(label_points: Tensor, labels: Tensor, ignore: int) -> tuple[Tensor, Tensor]:
    """Label map read at points (...,P) and segment labels (...,K) -> binary targets (...,K,P)
    and point weights (...,1,P) (0 on ignore pixels)."""
    targets = (label_points[..., None, :] == labels[..., :, None]).float()
    return targets, (label_points != ignore).float()[..., None, :]


def group_by_pixel(maps: Tensor, pixels: Tensor, tgt: Tensor,
                   weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Points that read the same pixel, summed: the costs are sums over points of w_p f(x_p)
    and w_p t_kp f(x_p) with x_p the pixel's value, so a pixel read by several points counts
    once, weighted by their sum (P uniform points fall on about (1 - exp(-P/hw)) hw distinct
    pixels: 54 % of 16,384 for 12,544 points, 63 % when P = hw), and the predictions are read
    and transformed there alone.

    maps (B,Q,hw), pixels (B,P) long, tgt (B,K,P), weights (B,1,P) -> maps at each image's
    distinct pixels (B,Q,U), tgt = sum w t / sum w (B,K,U) and weights = sum w (B,1,U) per
    pixel, U the most distinct pixels of an image (the others padded with weight 0)."""
    b, hw = maps.shape[0], maps.shape[-1]
    occupied = torch.zeros(b, hw, dtype=torch.bool, device=maps.device)
    occupied.scatter_(1, pixels, True)
    image, pixel = occupied.nonzero(as_tuple=True)  # ordered by image, then pixel
    counts = occupied.sum(1)
    rank = torch.arange(image.numel(), device=maps.device) - (counts.cumsum(0) - counts)[image]
    table = torch.zeros(b, max(int(counts.max()), 1), dtype=torch.long, device=maps.device)
    table[image, rank] = pixel  # (B,U) each image's distinct pixels; padding reads pixel 0
    slot = torch.zeros(b, hw, dtype=torch.long, device=maps.device)
    slot[image, pixel] = rank
    where = slot.gather(1, pixels)[:, None]  # (B,1,P) each point's column
    sums = torch.zeros(b, tgt.shape[1] + 1, table.shape[1], dtype=tgt.dtype, device=tgt.device)
    sums.scatter_add_(2, where.expand(-1, sums.shape[1], -1),
                      torch.cat([tgt * weights, weights], 1))
    weight = sums[:, -1:]
    read = maps.gather(2, table[:, None].expand(-1, maps.shape[1], -1))
    return read, sums[:, :-1] / weight.clamp_min(1e-12), weight


class HungarianMatcher(nn.Module):
    """cost(q, k) = cost_class * (-softmax(z_q)[y_k]) + cost_mask * bce(M_q, m_k)
    + cost_dice * dice(M_q, m_k), ignore pixels excluded from the mask terms.

    The softmax runs over every column of ``pred_logits`` (C+1 in background_embedding mode).
    With ``num_points`` > 0 the mask terms are read at that many uniform points per image
    (``mask_terms.points_for``): predictions at the nearest stride-4 pixel (each distinct pixel
    once, :func:`group_by_pixel`), targets from the label map at the nearest pixel, so no
    full-resolution mask is built; the cost matrices of
    the whole batch are one set of tensor ops, and only the assignment itself runs per image,
    on the CPU. ``num_points`` = 0 compares at every pixel of the target (predictions upsampled
    bilinearly), one image at a time.
    """

    def __init__(self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
                 num_points: int = 0, ignore_index: int = 255) -> None:
        super().__init__()
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points
        self.ignore_index = ignore_index

    def batch_costs(self, logits: Tensor, pred: Tensor, labels: Tensor, tgt: Tensor,
                    weights: Tensor) -> Tensor:
        """logits (B,Q,C'), pred (B,Q,P) mask logits at points, labels (B,K) (-1: padding),
        tgt (B,K,P) binary, weights (B,1,P) -> (B,Q,K) costs."""
        prob = logits.float().softmax(-1)
        index = labels.clamp_min(0)[:, None].expand(-1, prob.shape[1], -1)
        cost = -self.cost_class * prob.gather(2, index)
        cost = cost + self.cost_mask * sigmoid_bce(pred, tgt, weights, pairwise=True)
        return cost + self.cost_dice * dice_loss(pred, tgt, weights, pairwise=True)

    def points(self, masks: Tensor, labels: Tensor, label_map: Tensor) -> tuple[Tensor, ...]:
        """masks (B,Q,h,w), labels (B,K), label_map (B,H,W) -> pred (B,Q,U), tgt (B,K,U),
        weights (B,1,U) at ``points_for(num_points)`` uniform points per image, grouped by the
        mask pixel they read (:func:`group_by_pixel`: U distinct pixels, padded)."""
        coords = uniform_coords(masks.shape[0], points_for(self.num_points, masks.shape[-2:]),
                                masks.device)
        label_points = read_nearest(label_map[:, None], coords)[:, 0]
        tgt, weights = segments_at(label_points, labels, self.ignore_index)
        pixels = nearest_index(coords, *masks.shape[-2:])  # (B,P) the mask pixel each reads
        pred, tgt, weights = group_by_pixel(masks.flatten(2), pixels, tgt, weights)
        return pred.float(), tgt, weights

    def cost_matrix(self, logits: Tensor, masks: Tensor, target: dict[str, Tensor],
                    valid: Tensor) -> Tensor:
        """One image at every target pixel: logits (Q,C'), masks (Q,h,w), target labels (K,)
        and masks (K,H,W), valid (H,W) -> (Q,K)."""
        tmasks = target["masks"].float()
        masks = masks.float()
        if masks.shape[-2:] != tmasks.shape[-2:]:
            masks = F.interpolate(masks[None], size=tmasks.shape[-2:], mode="bilinear",
                                  align_corners=False)[0]
        weights = valid.float().flatten()[None, None]
        return self.batch_costs(logits[None], masks.flatten(1)[None], target["labels"][None],
                                tmasks.flatten(1)[None], weights)[0]

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict[str, Tensor]], valid: Tensor,
                label_map: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """outputs: pred_logits (B,Q,C'), pred_masks (B,Q,h,w); valid (B,H,W) bool; label_map:
        (B,H,W) vocabulary labels (``ignore_index`` off ``valid``), built from the targets'
        masks when not given. Returns per image (query indices, target indices), each
        (min(Q,K),) long, on the CPU."""
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        counts = [int(t["labels"].numel()) for t in targets]
        if self.num_points > 0:
            valid = valid.to(masks.device)
            if label_map is None:
                label_map = label_map_of(targets, valid, self.ignore_index)
            labels = pad_labels(targets, masks.device)
            pred, tgt, w = self.points(masks, labels, label_map.to(masks.device))
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
