"""Background-free class enhancement loss, pixel-level part: a focal loss on the aggregated map.

Notation: query q has class logits z_q over the vocabulary and mask logits M_q.

    S(c, x) = sum_q softmax_c(z_q)[c] * sigmoid(M_q(x))            (inference.semantic_probs)
    P(c, x) = S(c, x) / (sum_c' S(c', x) + EPS)                   (inference.normalize_classes)
    L_pixel = mean over labelled pixels x with class y(x) of
              -(1 - P(y, x))^gamma * log(max(P(y, x), eps))          (focal loss)

S is computed at the mask resolution (stride 4) and bilinearly UPSAMPLED to the label size
before the normalisation, exactly as ``inference.semantic_map`` does; labels are not resized.
Ignore pixels are not averaged. In background_embedding mode the no-object column is dropped after
the softmax, as at inference. (Part a, cross-entropy over matched queries only, is in
``criterion.SetCriterion``.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from celseg.losses.mask_terms import points_for, read_bilinear, read_nearest, uniform_coords
from celseg.models.inference import aggregate_mask_probs, normalize_classes, proposal_probs


def pixel_focal_loss(
    pred_logits: torch.Tensor,
    pred_masks: torch.Tensor,
    labels_vocab: torch.Tensor,
    has_background: bool,
    gamma: float = 2.0,
    ignore_index: int = 255,
    eps: float = 1e-6,
    num_points: int = 0,
) -> torch.Tensor:
    """pred_logits (B,Q,C[+1]), pred_masks (B,Q,h,w), labels_vocab (B,H,W) -> () loss.

    num_points > 0: the mean runs over that many uniform points per image (capped at h*w,
    ``mask_terms.points_for``), S read bilinearly there (as the sigmoid masks read there and
    aggregated: the same, S being linear in them, for Q maps read instead of C) and the label
    at the nearest pixel, an unbiased estimate of the every-pixel mean that never builds the
    (B,C,H,W) map.
    """
    probs_in = proposal_probs(pred_logits.float(), has_background)[0]  # (B,Q,C)
    mask_probs = pred_masks.float().sigmoid()
    count = points_for(num_points, pred_masks.shape[-2:])
    if count:  # S is linear in the masks' sigmoids: read those (Q maps, not C) at the points
        coords = uniform_coords(pred_masks.shape[0], count, pred_masks.device)
        scores = aggregate_mask_probs(probs_in, read_bilinear(mask_probs, coords))  # (B,C,P)
        labels_vocab = read_nearest(labels_vocab[:, None], coords)[:, 0]  # (B,P)
    else:  # inference.semantic_probs
        scores = aggregate_mask_probs(probs_in, mask_probs)
        if scores.shape[-2:] != labels_vocab.shape[-2:]:
            scores = F.interpolate(
                scores, size=labels_vocab.shape[-2:], mode="bilinear", align_corners=False
            )
    probs = normalize_classes(scores)  # (B,C,...)
    valid = labels_vocab != ignore_index
    index = torch.where(valid, labels_vocab, torch.zeros_like(labels_vocab))
    p_true = probs.gather(1, index[:, None]).squeeze(1)  # (B,...) at every pixel or point
    loss = -((1 - p_true) ** gamma) * p_true.clamp_min(eps).log()
    # mean over labelled pixels (0 when there is none), without a data-dependent shape
    weight = valid.to(loss.dtype)
    return (loss * weight).sum() / weight.sum().clamp_min(1.0)
