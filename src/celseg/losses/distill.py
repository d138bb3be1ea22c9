"""Distillation of the proposals' class embeddings into the VLM's image space (ViLD, OpenSeg).

For proposal q with unit class embedding e_q and mask logits M_q, and the VLM's unit dense image
features f(x) of the same image (the shared tower's ``vlm_dense``, or a VLM forward of the
training batch), the target is the VLM's mask-pooled embedding of the proposal, exactly what the
out-of-vocabulary branch classifies at inference (``celseg.models.inference.mask_pool``):

    v_q = normalise( sum_x m_q(x) f(x) / sum_x m_q(x) ),  m_q = [M_q > 0] ("binary") or
          sigmoid(M_q) ("soft"), the mask resized to the feature map;
    cosine:  L = mean_q (1 - <e_q, v_q>)
    l1:      L = mean_q sum_d |e_q,d - v_q,d|                     (ViLD's L1 on unit vectors)

over every proposal with a non-empty mask (all queries, matched or not: a proposal on an unseen
object learns its embedding from the VLM, which is what lets the segmenter transfer by itself).
v_q is a constant (stop-gradient on the VLM side, masks included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from celseg.models.inference import mask_pool

KINDS = ("cosine", "l1")


@torch.no_grad()
def pooled_targets(vlm_dense: torch.Tensor, mask_logits: torch.Tensor,
                   pooling: str = "binary") -> tuple[torch.Tensor, torch.Tensor]:
    """vlm_dense (B,D,h,w) unit, mask_logits (B,Q,H,W) -> v (B,Q,D) unit (constant) and
    keep (B,Q) bool: the proposals with a non-empty pooling mask."""
    v = mask_pool(vlm_dense.detach().float(), mask_logits.detach(), pooling)
    return v, v.norm(dim=-1) > 0.5  # an empty binary mask pools to the zero vector


def distill_loss(class_embed: torch.Tensor, vlm_dense: torch.Tensor, mask_logits: torch.Tensor,
                 kind: str = "cosine", pooling: str = "binary") -> torch.Tensor:
    """class_embed (B,Q,D) unit, vlm_dense (B,D,h,w) unit, mask_logits (B,Q,H,W) -> () loss
    (module docstring); 0 when no proposal has a mask."""
    if kind not in KINDS:
        raise ValueError(f"distillation kind {kind!r}; expected one of {', '.join(KINDS)}")
    target, keep = pooled_targets(vlm_dense, mask_logits, pooling)
    e = class_embed.float()
    if kind == "cosine":
        per_query = 1.0 - (e * target).sum(-1)
    else:
        per_query = F.l1_loss(e, target, reduction="none").sum(-1)
    weight = keep.to(per_query.dtype)
    return (per_query * weight).sum() / weight.sum().clamp_min(1.0)
