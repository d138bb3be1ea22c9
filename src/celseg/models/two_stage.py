"""zsseg-style two-stage inference: re-classify each mask proposal with a VLM image encoder.

Stage one is the segmenter (``Segmenter.forward``): per query q a class distribution p_seg(q, c)
and a mask logit map M_q. Stage two crops the image around each proposal's mask (pixels outside
the mask filled with a constant, the crop padded to a square and resized), encodes the crops with
``vlm.encode_image`` and classifies them against the class text embeddings:
p_clip(q, c) = softmax_c(scale * <e_img(q), t_c>). The two are combined per class by a weighted
geometric mean

    p(q, c) = p_seg(q, c) ** (1 - w_c) * p_clip(q, c) ** w_c,

with w_c = ``clip_weight_unseen`` for unseen classes and ``clip_weight_seen`` for seen ones.
zsseg uses one ensemble weight lambda (0.7 VOC / 0.8 COCO) as w_unseen = lambda and
w_seen = 1 - lambda, which are the defaults here for lambda = 0.8. Proposals whose mask is empty
keep p_clip = 1 (zsseg's behaviour: the CLIP term is neutral). The semantic map is then
S(c, x) = sum_q p(q, c) * sigmoid(M_q(x)), as in ``celseg.models.inference.aggregate``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from celseg.models.inference import aggregate, geometric_ensemble, proposal_probs

# CLIP's pixel mean in [0, 1]: filling the background with it makes it look "empty" to CLIP
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)


def masked_crop(image: torch.Tensor, mask: torch.Tensor, crop_size: int,
                fill: tuple[float, float, float] = CLIP_MEAN) -> torch.Tensor:
    """One proposal's crop.

    Args:
        image: (3,H,W) in [0,1].
        mask: (H,W) bool, not empty.
    Returns:
        (3,crop_size,crop_size): the mask's bounding box, pixels outside the mask set to ``fill``,
        padded (centred) to a square with ``fill`` and resized bilinearly.
    """
    ys, xs = torch.nonzero(mask, as_tuple=True)
    y0, y1 = int(ys.min()), int(ys.max()) + 1
    x0, x1 = int(xs.min()), int(xs.max()) + 1
    fill_t = torch.tensor(fill, dtype=image.dtype, device=image.device).view(3, 1, 1)
    box = torch.where(mask[y0:y1, x0:x1], image[:, y0:y1, x0:x1], fill_t)
    h, w = y1 - y0, x1 - x0
    side = max(h, w)
    square = fill_t.expand(3, side, side).clone()
    top, left = (side - h) // 2, (side - w) // 2
    square[:, top:top + h, left:left + w] = box
    return F.interpolate(square[None], size=(crop_size, crop_size), mode="bilinear",
                         align_corners=False)[0]


@torch.no_grad()
def clip_proposal_probs(vlm: torch.nn.Module, images: torch.Tensor, mask_logits: torch.Tensor,
                        text_emb: torch.Tensor, crop_size: int = 224, logit_scale: float = 100.0,
                        batch_size: int = 64,
                        fill: tuple[float, float, float] = CLIP_MEAN,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Classify every proposal's masked crop with the VLM image encoder.

    Args:
        vlm: has ``encode_image((N,3,S,S) in [0,1]) -> (N,D)`` normalised.
        images: (B,3,H,W) in [0,1].
        mask_logits: (B,Q,h,w) mask logits (any resolution; resized to H,W; > 0 is inside).
        text_emb: (C,D) normalised text embeddings of the same VLM.
    Returns:
        p_clip (B,Q,C) (ones for invalid proposals) and valid (B,Q) bool (non-empty mask).
    """
    b, q = mask_logits.shape[:2]
    masks = F.interpolate(mask_logits.float(), size=images.shape[-2:], mode="bilinear",
                          align_corners=False) > 0
    valid = masks.flatten(2).any(-1)  # (B,Q)
    p_clip = images.new_ones(b, q, text_emb.shape[0], dtype=torch.float32)
    index = valid.nonzero().tolist()
    for start in range(0, len(index), batch_size):
        chunk = index[start:start + batch_size]
        crops = torch.stack([masked_crop(images[i].float(), masks[i, j], crop_size, fill)
                             for i, j in chunk])
        emb = F.normalize(vlm.encode_image(crops).float(), dim=-1)
        probs = (logit_scale * emb @ text_emb.float().t()).softmax(-1)
        for (i, j), p in zip(chunk, probs, strict=True):
            p_clip[i, j] = p
    return p_clip, valid


def crop_ensemble(p_seg: torch.Tensor, images: torch.Tensor, mask_logits: torch.Tensor,
                  vlm: torch.nn.Module, clip_text_emb: torch.Tensor, unseen: torch.Tensor,
                  clip_weight_seen: float = 0.2, clip_weight_unseen: float = 0.8,
                  crop_size: int = 224, logit_scale: float = 100.0) -> torch.Tensor:
    """(B,Q,C) per-proposal probabilities p_seg^(1-w) * p_clip^w (not renormalised, as zsseg).

    p_seg: (B,Q,C) segmenter probabilities (no-object dropped); images: (B,3,H,W) in [0,1];
    mask_logits: (B,Q,h,w); clip_text_emb: (C,D) of ``vlm``; unseen: (C,) bool.
    """
    num_classes = p_seg.shape[-1]
    if clip_text_emb.shape[0] != num_classes:
        raise ValueError(f"clip_text_emb has {clip_text_emb.shape[0]} classes, the segmenter "
                         f"{num_classes}")
    p_clip, _ = clip_proposal_probs(vlm, images, mask_logits, clip_text_emb.to(images.device),
                                    crop_size=crop_size, logit_scale=logit_scale)
    weight = torch.where(unseen.to(p_seg.device), clip_weight_unseen, clip_weight_seen)
    return geometric_ensemble(p_seg, p_clip.to(p_seg.device), weight)


def two_stage_probs(outputs: dict, images: torch.Tensor, vlm: torch.nn.Module,
                    clip_text_emb: torch.Tensor, unseen_ids: list[int] | torch.Tensor,
                    has_background: bool, clip_weight_seen: float = 0.2,
                    clip_weight_unseen: float = 0.8, crop_size: int = 224,
                    logit_scale: float = 100.0) -> torch.Tensor:
    """Two-stage semantic scores from ``Segmenter.forward`` outputs.

    Args:
        outputs: ``pred_logits`` (B,Q,C) or (B,Q,C+1), ``pred_masks`` (B,Q,h,w) logits.
        images: (B,3,H,W) in [0,1] (not ImageNet-normalised: the VLM normalises itself).
        clip_text_emb: (C,D) text embeddings of ``vlm``, same class order as the segmenter's.
        unseen_ids: vocabulary indices of the unseen classes.
    Returns:
        (B,C,h,w) scores S(c,x) = sum_q p(q,c) * sigmoid(M_q(x)) at the mask resolution.
    """
    logits, mask_logits = outputs["pred_logits"], outputs["pred_masks"]
    p_seg = proposal_probs(logits.float(), has_background)[0]
    unseen = torch.zeros(p_seg.shape[-1], dtype=torch.bool, device=p_seg.device)
    unseen[torch.as_tensor(unseen_ids, dtype=torch.long, device=p_seg.device)] = True
    p = crop_ensemble(p_seg, images, mask_logits, vlm, clip_text_emb, unseen, clip_weight_seen,
                      clip_weight_unseen, crop_size, logit_scale)
    return aggregate(p, mask_logits.float())
