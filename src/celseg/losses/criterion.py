"""The set criterion: matching, then named loss terms, weighted in one place.

Terms per decoder prediction (final, then ``_aux{i}`` for each earlier one):

- ``loss_ce``: background_embedding: cross-entropy over C+1 columns for every query; matched
  queries target their class, unmatched ones the no-object column, whose class weight is
  ``no_object_weight`` (weighted mean, as in DETR/MaskFormer). Mode "background_free":
  cross-entropy over the C vocabulary columns for matched queries only, summed and divided by
  ``num_masks``: with no background column there is nothing to push unmatched queries towards,
  so they get no class target.
- ``loss_mask`` / ``loss_dice``: sigmoid BCE and dice of matched (query, segment) pairs, summed
  and divided by ``num_masks``; ignore pixels excluded. Read at ``num_points``
  importance-sampled points per pair (Mask2Former), or at every pixel.
- ``loss_pixel``: focal loss on the aggregated semantic map (``class_enhancement``), at
  ``num_points`` uniform points per image, or at every pixel.
- ``loss_rank``: ranking class enhancement loss of matched queries (``ranking``), its target
  order from the text-text space, the VLM's image-text space or both (``ranking_target``).
- ``loss_distill``: every proposal's class embedding towards the VLM's mask-pooled image
  embedding of its mask (``distill``).

The last two read the VLM's dense image features ``outputs["vlm_dense"]`` (B,D,h,w) where they
need them (``needs_vlm_dense``): the shared tower's, or the trainer's VLM forward of the batch.

``num_masks`` is the number of ground-truth segments in the batch (at least 1). Under
``torch.distributed`` it is summed over the processes and divided by their number (Mask2Former):
DDP averages the gradients, so a term divided by it gets the gradient of that term over the
whole global batch divided by the global count, whatever share of the segments each process
holds. (The background_embedding ``loss_ce``, ``loss_pixel`` and ``loss_rank`` stay means over
each process's own batch, as in Mask2Former.)

With points, the targets are read from the label map (no full-resolution mask is built); the
segment labels are padded once per batch and shared by every decoder layer; the matching moves
to the CPU once per layer (the assignment), everything else stays on the outputs' device.

A term whose weight is 0 is not computed and not returned.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from celseg.config import LossConfig
from celseg.errors import CelsegError
from celseg.losses.class_enhancement import pixel_focal_loss
from celseg.losses.distill import distill_loss, pooled_targets
from celseg.losses.mask_terms import (
    dice_loss,
    importance_coords,
    nearest_index,
    points_for,
    read_bilinear,
    sigmoid_bce,
)
from celseg.losses.matcher import HungarianMatcher, pad_labels
from celseg.losses.ranking import ranking_terms

TERMS = ("loss_ce", "loss_mask", "loss_dice", "loss_pixel", "loss_rank", "loss_distill")
# LossConfig fields that SetCriterion takes under the same name
SETTINGS = ("no_object_weight", "num_points", "oversample_ratio", "importance_sample_ratio",
            "aux_loss", "pixel_gamma", "ranking_kind", "ranking_tau", "ranking_margin",
            "ranking_target", "distill_kind")
# the proposals' VLM embeddings pool binary masks, as the out-of-vocabulary branch does by
# default (eval.pooling)
VLM_POOLING = "binary"


class SetCriterion(nn.Module):
    """Args:
        matcher: callable ``(outputs, targets, valid (B,H,W) bool) -> [(query_idx,
            target_idx)]``; a :class:`HungarianMatcher` also gets the label map.
        weights: weight of each term in ``TERMS``.
        has_background: background_embedding mode (pred_logits has a last no-object column).
        no_object_weight: background_embedding class weight of the no-object column.
        num_points: points per mask for the mask terms and per image for the pixel term,
            capped at the predicted mask's pixels (0: every pixel of the target).
        oversample_ratio, importance_sample_ratio: importance sampling of the mask terms' points
            (``mask_terms.importance_coords``).
        aux_loss: also compute the terms for ``outputs["aux_outputs"]``.
        pixel_gamma: focal gamma of ``loss_pixel``.
        ranking_kind, ranking_tau, ranking_margin, ranking_target: see
            ``ranking.ranking_terms``.
        distill_kind: ``cosine`` or ``l1`` (``distill.distill_loss``).
    """

    def __init__(
        self,
        matcher: HungarianMatcher,
        weights: dict[str, float],
        has_background: bool,
        no_object_weight: float = 0.1,
        num_points: int = 0,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        aux_loss: bool = True,
        pixel_gamma: float = 2.0,
        ranking_kind: str = "listwise",
        ranking_tau: float = 0.05,
        ranking_margin: float = 0.1,
        ranking_target: str = "text",
        distill_kind: str = "cosine",
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        unknown = set(weights) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; known: {TERMS}")
        if ranking_kind not in ("listwise", "pairwise"):
            raise CelsegError(f"loss.ranking_kind '{ranking_kind}' is not listwise or pairwise")
        self.matcher = matcher
        self.weights = {k: float(weights.get(k, 0.0)) for k in TERMS}
        self.has_background = has_background
        self.no_object_weight = no_object_weight
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.aux_loss = aux_loss
        self.pixel_gamma = pixel_gamma
        self.ranking_kind = ranking_kind
        self.ranking_tau = ranking_tau
        self.ranking_margin = ranking_margin
        self.ranking_target = ranking_target
        self.distill_kind = distill_kind
        self.ignore_index = ignore_index

    @property
    def needs_target_masks(self) -> bool:
        """Whether targets must carry full-resolution ``masks`` (every-pixel mask terms)."""
        return self.num_points <= 0 or not isinstance(self.matcher, HungarianMatcher)

    @property
    def needs_vlm_dense(self) -> bool:
        """Whether a term reads ``outputs["vlm_dense"]`` (the VLM's dense image features)."""
        return bool(self.weights["loss_distill"]) or (
            bool(self.weights["loss_rank"]) and self.ranking_target != "text")

    def forward(
        self,
        outputs: dict,
        targets: list[dict[str, torch.Tensor]],
        labels_vocab: torch.Tensor,
        rank_text_emb: torch.Tensor | None = None,
        rank_target_index: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """outputs: the segmenter's dict; targets: ``labels_to_targets``; labels_vocab (B,H,W)
        vocabulary indices with ``ignore_index``; rank_text_emb (R,D) with rank_target_index (C,)
        mapping vocabulary index -> row (default: rank over ``outputs["text_emb"]``).
        Returns weighted terms ``{"loss_ce": ..., "loss_ce_aux0": ..., ...}``."""
        # the losses run in float32 even when the forward pass ran under autocast
        with torch.autocast(device_type=labels_vocab.device.type, enabled=False):
            return self._forward(outputs, targets, labels_vocab, rank_text_emb, rank_target_index)

    def _forward(
        self,
        outputs: dict,
        targets: list[dict[str, torch.Tensor]],
        labels_vocab: torch.Tensor,
        rank_text_emb: torch.Tensor | None,
        rank_target_index: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        # shared by every decoder layer: validity, padded segment labels, the normaliser
        valid = labels_vocab != self.ignore_index
        labels = pad_labels(targets, labels_vocab.device)
        layers = [("", outputs)]
        if self.aux_loss:
            layers += [(f"_aux{i}", aux) for i, aux in enumerate(outputs.get("aux_outputs", []))]
        num_masks = _num_masks(targets, labels_vocab.device)
        vlm_dense = outputs.get("vlm_dense")
        if self.needs_vlm_dense and vlm_dense is None:
            raise CelsegError("loss.distill_weight / loss.ranking_target need the VLM's dense "
                              "image features (outputs['vlm_dense']), and none were given")
        losses: dict[str, torch.Tensor] = {}
        for suffix, out in layers:
            indices = (self.matcher(out, targets, valid, label_map=labels_vocab)
                       if isinstance(self.matcher, HungarianMatcher)
                       else self.matcher(out, targets, valid))
            terms = self.layer_terms(
                out, targets, labels, indices, labels_vocab, num_masks, rank_text_emb,
                rank_target_index, vlm_dense,
            )
            # the one place where weights are applied
            losses.update({name + suffix: self.weights[name] * v for name, v in terms.items()})
        return losses

    def layer_terms(
        self,
        out: dict,
        targets: list[dict[str, torch.Tensor]],
        labels: torch.Tensor,
        indices: list[tuple[torch.Tensor, torch.Tensor]],
        labels_vocab: torch.Tensor,
        num_masks: float,
        rank_text_emb: torch.Tensor | None = None,
        rank_target_index: torch.Tensor | None = None,
        vlm_dense: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Unweighted terms of one decoder prediction, for the given matching. labels: (B,Kmax)
        the targets' segment labels as ``matcher.pad_labels`` stacks them; vlm_dense (B,D,h,w)
        the VLM's dense features (the ranking's image target and the distillation)."""
        w = self.weights
        pairs = _pairs(indices, labels.device)
        classes = labels[pairs[0], pairs[2]]  # vocabulary class of each matched pair
        terms: dict[str, torch.Tensor] = {}
        if w["loss_ce"]:
            terms["loss_ce"] = self.class_term(out["pred_logits"], pairs, classes, num_masks)
        if w["loss_mask"] or w["loss_dice"]:
            bce, dice = self.mask_terms(out["pred_masks"], targets, pairs, classes,
                                        labels_vocab, num_masks)
            if w["loss_mask"]:
                terms["loss_mask"] = bce
            if w["loss_dice"]:
                terms["loss_dice"] = dice
        if w["loss_pixel"]:
            terms["loss_pixel"] = pixel_focal_loss(
                out["pred_logits"], out["pred_masks"], labels_vocab, self.has_background,
                self.pixel_gamma, self.ignore_index, num_points=self.num_points,
            )
        if w["loss_rank"]:
            terms["loss_rank"] = self.rank_term(
                out, pairs, classes, rank_text_emb, rank_target_index, vlm_dense
            )
        if w["loss_distill"]:
            terms["loss_distill"] = distill_loss(out["class_embed"], vlm_dense,
                                                 out["pred_masks"], self.distill_kind,
                                                 VLM_POOLING)
        return terms

    def class_term(self, logits: torch.Tensor, pairs: tuple[torch.Tensor, ...],
                   classes: torch.Tensor, num_masks: float) -> torch.Tensor:
        """logits (B,Q,C[+1]); pairs: (batch, query, target) indices of the matched pairs;
        classes their labels."""
        logits = logits.float()
        b, q, cols = logits.shape
        batch_idx, query_idx = pairs[0].to(logits.device), pairs[1].to(logits.device)
        classes = classes.to(logits.device)
        if self.has_background:
            target = torch.full((b, q), cols - 1, dtype=torch.long, device=logits.device)
            target[batch_idx, query_idx] = classes
            weight = torch.ones(cols, device=logits.device)
            weight[-1] = self.no_object_weight
            return F.cross_entropy(logits.transpose(1, 2), target, weight)
        if classes.numel() == 0:
            return logits.sum() * 0.0
        return F.cross_entropy(logits[batch_idx, query_idx], classes, reduction="sum") / num_masks

    def mask_terms(
        self,
        pred_masks: torch.Tensor,
        targets: list[dict[str, torch.Tensor]],
        pairs: tuple[torch.Tensor, ...],
        classes: torch.Tensor,
        labels_vocab: torch.Tensor,
        num_masks: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """pred_masks (B,Q,h,w), pairs (batch, query, target) with their classes, labels_vocab
        (B,H,W) -> (bce, dice) of the matched pairs. Each pair is read at its own
        importance-sampled points, its target there being "the label map equals its class";
        with num_points 0, at every pixel of its target mask."""
        batch_idx, query_idx, target_idx = (i.to(pred_masks.device) for i in pairs)
        if batch_idx.numel() == 0:
            zero = pred_masks.sum() * 0.0
            return zero, zero
        src = pred_masks[batch_idx, query_idx].float()  # (N,h,w)
        count = points_for(self.num_points, src.shape[-2:])
        if count == 0:
            tgt = torch.stack([targets[b]["masks"][t] for b, t in zip(
                pairs[0].tolist(), pairs[2].tolist(), strict=True)]).to(src)  # (N,H,W)
            pred = F.interpolate(src[:, None], size=tgt.shape[-2:], mode="bilinear",
                                 align_corners=False)[:, 0].flatten(1)
            keep = labels_vocab[batch_idx] != self.ignore_index
            tgt, weights = tgt.flatten(1), keep.flatten(1).float()
        else:
            coords = importance_coords(src, count, self.oversample_ratio,
                                       self.importance_sample_ratio)
            pred = read_bilinear(src[:, None], coords)[:, 0]
            height, width = labels_vocab.shape[-2:]
            flat = nearest_index(coords, height, width) + (batch_idx * (height * width))[:, None]
            # (N,P) read from the whole map by flat index: no (N,H*W) copy of the pairs' maps
            label_points = labels_vocab.take(flat)
            tgt = (label_points == classes.to(label_points.device)[:, None]).float()
            weights = (label_points != self.ignore_index).float()
        bce = sigmoid_bce(pred, tgt, weights).sum()
        dice = dice_loss(pred, tgt, weights).sum()
        return bce / num_masks, dice / num_masks

    def rank_term(
        self,
        out: dict,
        pairs: tuple[torch.Tensor, ...],
        classes: torch.Tensor,
        rank_text_emb: torch.Tensor | None,
        rank_target_index: torch.Tensor | None,
        vlm_dense: torch.Tensor | None = None,
    ) -> torch.Tensor:
        embed = out["class_embed"]
        batch_idx, query_idx = pairs[0].to(embed.device), pairs[1].to(embed.device)
        classes = classes.to(embed.device)
        if rank_text_emb is None:
            rank_text_emb = out["text_emb"]
            rows = classes
        else:
            if rank_target_index is None:
                raise ValueError("rank_text_emb needs rank_target_index (vocabulary -> row)")
            rows = rank_target_index.to(embed.device)[classes]
        image = None
        if self.ranking_target != "text":  # the VLM's embedding of each matched query's region
            pooled = pooled_targets(vlm_dense, out["pred_masks"], VLM_POOLING)[0]
            image = pooled.to(embed.device)[batch_idx, query_idx]
        return ranking_terms(
            embed[batch_idx, query_idx].float(), out["logit_scale"].float(), rows,
            rank_text_emb.to(embed.device).float(), image, self.ranking_target,
            self.ranking_kind, self.ranking_tau, self.ranking_margin,
        )


def _num_masks(targets: list[dict[str, torch.Tensor]], device: torch.device) -> float:
    """Ground-truth segments per process: this batch's count, or under ``torch.distributed``
    the count summed over processes and divided by their number; at least 1."""
    count = sum(int(t["labels"].numel()) for t in targets)
    if not (dist.is_available() and dist.is_initialized()):
        return max(count, 1)
    total = torch.tensor(float(count), dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return max(total.item() / dist.get_world_size(), 1.0)


def _pairs(
    indices: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flatten a matching: (batch index, query index, target index) of each matched pair."""
    if not indices:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, empty
    batch = torch.cat([torch.full_like(qi, b) for b, (qi, _) in enumerate(indices)])
    queries = torch.cat([qi for qi, _ in indices])
    targets = torch.cat([ti for _, ti in indices])
    return batch.to(device), queries.to(device), targets.to(device)


def build_criterion(cfg: LossConfig, has_background: bool) -> SetCriterion:
    """The criterion and matcher described by ``cfg`` (the only place that reads LossConfig)."""
    matcher = HungarianMatcher(cfg.cost_class, cfg.cost_mask, cfg.cost_dice, cfg.num_points)
    weights = {
        "loss_ce": cfg.class_weight,
        "loss_mask": cfg.mask_weight,
        "loss_dice": cfg.dice_weight,
        "loss_pixel": cfg.pixel_weight,
        "loss_rank": cfg.ranking_weight,
        "loss_distill": cfg.distill_weight,
    }
    options = {name: getattr(cfg, name) for name in SETTINGS}
    return SetCriterion(matcher, weights, has_background, **options)
