"""The one inference path: segmenter outputs -> per-proposal class probabilities -> semantic
scores -> labels.

Every consumer (evaluation, prediction, sliding window, pseudo-label and self-training relabel,
the demo, the ablation and the web page) goes through :class:`SemanticInference`, and the pixel
loss shares :func:`semantic_probs` and :func:`normalize_classes`, so each step has one home.

Notation: query q has class logits z_q over the vocabulary of V names (plus a no-object column in
background_embedding mode) and a mask logit map M_q.

1. Per-proposal class probabilities p(q, c), one of four **protocols**:

   - ``segmenter``: p_in(q, c) = softmax_c(z_q)[c], the no-object column dropped after the
     softmax (the segmenter alone).
   - ``ensemble`` (FC-CLIP): the VLM's dense image features f(x) (B, D, h, w) are pooled inside
     each proposal's mask, e_q = normalise(sum_x m_q(x) f(x) / sum_x m_q(x)), with m_q the mask
     resized to the feature map (``soft``: sigmoid(M_q); ``binary``: M_q > 0), and classified
     against the VLM's text embeddings t_c: p_out(q, c) = softmax_c(s * <e_q, t_c>).
     Then p(q, c) = p_in^(1 - w_c) * p_out^(w_c), renormalised over c, times (1 - p_void(q)) in
     background_embedding mode; w_c = alpha for classes labelled in training, beta for the others.
   - ``vlm``: the ensemble with every w_c = 1 (the VLM branch alone).
   - ``two_stage`` (zsseg): p_out from masked crops (``celseg.models.two_stage``), combined
     without renormalisation.
2. Semantic scores S(c, x) = sum_q p(q, c) * sigmoid(M_q(x)) at the mask resolution. Under
   ``ensemble`` with a pixel weight lambda > 0, S(c, x) is multiplied by D(c, x)^lambda, D the
   VLM's own per-pixel class probabilities from the same dense map,
   D(c, x) = softmax_c(s * <normalise(f(x)), t_c>) resized bilinearly to the masks: a proposal's
   mask may span regions the VLM tells apart (unseen pixels are unlabelled in training, so
   nothing stops a seen class's mask from covering them), and D lets them disagree.
3. Labels: S resized bilinearly to the output size, normalised over classes (S / sum_c S), the
   seen-class calibration subtracted from seen columns, argmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from celseg.pseudo.dense import dense_probs_from_features

EPS = 1e-6  # the one epsilon of the normalisation over classes
PROTOCOLS = ("segmenter", "ensemble", "vlm", "two_stage")
POOLINGS = ("soft", "binary")


# --- step 1: per-proposal class probabilities ----------------------------------------------------

def proposal_probs(pred_logits: Tensor, has_background: bool) -> tuple[Tensor, Tensor | None]:
    """(B,Q,C) or (B,Q,C+1) logits -> p_in (B,Q,C) and p_void (B,Q) (None without background).

    The softmax runs over every column; the no-object column is dropped afterwards.
    """
    probs = pred_logits.softmax(-1)
    if has_background:
        return probs[..., :-1], probs[..., -1]
    return probs, None


def mask_pool(features: Tensor, mask_logits: Tensor, pooling: str = "soft") -> Tensor:
    """Pool dense features inside each proposal's mask.

    Args:
        features: (B,D,h,w) dense features.
        mask_logits: (B,Q,H',W') mask logits at any resolution (resized bilinearly to h,w).
        pooling: ``soft`` weights by sigmoid(M), ``binary`` by M > 0.
    Returns:
        (B,Q,D) L2-normalised pooled features; an empty binary mask gives a zero vector.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}; expected one of {', '.join(POOLINGS)}")
    masks = mask_logits.float()
    if masks.shape[-2:] != features.shape[-2:]:
        masks = F.interpolate(masks, size=features.shape[-2:], mode="bilinear",
                              align_corners=False)
    weights = masks.sigmoid() if pooling == "soft" else (masks > 0).float()
    pooled = torch.einsum("bdhw,bqhw->bqd", features.float(), weights)
    pooled = pooled / weights.sum((-2, -1))[..., None].clamp_min(EPS)
    return F.normalize(pooled, dim=-1)


def oov_probs(pooled: Tensor, text_emb: Tensor, logit_scale: float = 100.0) -> Tensor:
    """(B,Q,D) pooled image features, (C,D) text embeddings -> (B,Q,C) softmax of scaled cosines."""
    return (logit_scale * pooled @ text_emb.to(pooled).t()).softmax(-1)


def pixel_probs(features: Tensor, text_emb: Tensor, size: tuple[int, int],
                logit_scale: float = 100.0) -> Tensor:
    """The VLM's own dense classification: (B,D,h,w) features, (C,D) unit text embeddings ->
    (B,C,H,W) softmax_c(s * <normalise(f(x)), t_c>), resized bilinearly to ``size``: the
    training-free path's :func:`celseg.pseudo.dense.dense_probs_from_features` at temperature
    1 / s, on features normalised first (a shared tower's map need not be)."""
    return dense_probs_from_features(F.normalize(features.float(), dim=1), text_emb, size,
                                     temperature=1.0 / logit_scale)


def geometric_ensemble(p_in: Tensor, p_out: Tensor, weight: Tensor) -> Tensor:
    """p_in^(1-w) * p_out^w per class; (B,Q,C) probabilities, (C,) weights. Not renormalised."""
    w = weight.to(p_in)
    return p_in.clamp_min(0) ** (1 - w) * p_out.clamp_min(0) ** w


def class_weights(num_classes: int, labelled_positions: list[int], alpha: float,
                  beta: float) -> Tensor:
    """(C,) ensemble weights: alpha at the vocabulary positions that had ground-truth labels in
    training, beta elsewhere."""
    w = torch.full((num_classes,), float(beta))
    if labelled_positions:
        w[torch.as_tensor(labelled_positions, dtype=torch.long)] = float(alpha)
    return w


# --- steps 2 and 3: semantic scores and labels -------------------------------------------------

def aggregate(probs: Tensor, mask_logits: Tensor) -> Tensor:
    """S(c, x) = sum_q p(q, c) sigmoid(M_q(x)): (B,Q,C), (B,Q,h,w) -> (B,C,h,w), held with the
    classes innermost (channels_last), computed as one (B,h*w,Q) x (B,Q,C) product: on CPU the
    resize and the argmax over classes of :func:`scores_to_labels` are several times faster on
    that layout."""
    mask_probs = mask_logits.sigmoid()
    b, _, h, w = mask_probs.shape
    flat = torch.bmm(mask_probs.flatten(2).transpose(1, 2), probs.to(mask_probs))  # (B,hw,C)
    return flat.view(b, h, w, -1).permute(0, 3, 1, 2)


def aggregate_mask_probs(probs: Tensor, mask_probs: Tensor) -> Tensor:
    """S = sum_q p(q, c) m_q from the masks' probabilities m_q = sigmoid(M_q) at any points:
    (B,Q,C), (B,Q,...) -> (B,C,...). Linear in m, so S read bilinearly at points equals this
    of m read there (the pixel loss reads the Q masks, not the C scores)."""
    return torch.einsum("bqc,bq...->bc...", probs, mask_probs)


def semantic_probs(pred_logits: Tensor, pred_masks: Tensor, has_background: bool) -> Tensor:
    """The segmenter's own semantic scores (B,C,h,w) in [0, Q], not normalised over classes."""
    return aggregate(proposal_probs(pred_logits, has_background)[0], pred_masks)


def normalize_classes(scores: Tensor) -> Tensor:
    """(B,C,...) scores -> S / (sum_c S + EPS): the one normalisation over classes, shared by
    inference and the pixel-level loss."""
    return scores / (scores.sum(1, keepdim=True) + EPS)


def calibrate(probs: Tensor, seen_positions: list[int] | Tensor | None,
              calibration: float) -> Tensor:
    """Subtract ``calibration`` from the seen columns (in place) of (B,C,...) probabilities;
    returns them."""
    if calibration and seen_positions is not None and len(seen_positions):
        seen = torch.as_tensor(seen_positions, dtype=torch.long, device=probs.device)
        probs[:, seen] -= calibration
    return probs


def resize_scores(scores: Tensor, out_size: tuple[int, int]) -> Tensor:
    """(B,C,h,w) -> (B,C,H,W) float, resized bilinearly (align_corners=False); the memory
    layout is kept."""
    if tuple(scores.shape[-2:]) == tuple(out_size):
        return scores.float()
    return F.interpolate(scores.float(), size=tuple(out_size), mode="bilinear",
                         align_corners=False)


def class_probs(scores: Tensor, out_size: tuple[int, int]) -> Tensor:
    """(B,C,h,w) scores -> (B,C,H,W) resized bilinearly and normalised over classes."""
    return normalize_classes(resize_scores(scores, out_size))


def labels_from_probs(probs: Tensor, seen_positions: list[int] | Tensor | None = None,
                      calibration: float = 0.0) -> Tensor:
    """(B,C,H,W) class probabilities -> (B,H,W) long: the argmax over classes after the
    seen-class calibration (:func:`calibrate`, in place). Ties go to the first class."""
    # max().indices: argmax's tie rule, and faster than argmax on CPU
    return calibrate(probs, seen_positions, calibration).max(1).indices


def scores_to_labels(scores: Tensor, out_size: tuple[int, int],
                     seen_positions: list[int] | Tensor | None = None,
                     calibration: float = 0.0) -> Tensor:
    """(B,C,h,w) semantic scores -> (B,H,W) long vocabulary positions: the scores resized to
    ``out_size``, normalised over classes (:func:`class_probs`), calibrated and labelled
    (:func:`labels_from_probs`)."""
    if calibration and seen_positions is not None and len(seen_positions):
        return labels_from_probs(class_probs(scores, out_size), seen_positions, calibration)
    # without calibration the normalisation, a positive scale per pixel, keeps the argmax
    return labels_from_probs(resize_scores(scores, out_size))


def semantic_map(outputs: dict, out_size: tuple[int, int],
                 seen_positions: list[int] | Tensor | None = None, calibration: float = 0.0,
                 has_background: bool | None = None) -> Tensor:
    """The segmenter alone: (B,H,W) vocabulary positions from ``Segmenter.forward`` outputs.

    ``seen_positions`` are vocabulary positions; ``has_background`` defaults to pred_logits
    having one column more than ``outputs["text_emb"]``.
    """
    logits = outputs["pred_logits"]
    if has_background is None:
        has_background = logits.shape[-1] == outputs["text_emb"].shape[0] + 1
    scores = semantic_probs(logits, outputs["pred_masks"], has_background)
    return scores_to_labels(scores, out_size, seen_positions, calibration)


def vlm_dense_features(vlm, images01: Tensor, input_scale: float = 1.0) -> Tensor:
    """(B,3,H,W) images in [0,1] -> the VLM's (B,D,h,w) dense features, the images first
    upsampled bilinearly by ``input_scale`` (the out-of-vocabulary branch's input; the loss's
    teacher reads the same)."""
    if input_scale != 1.0:
        images01 = F.interpolate(images01, scale_factor=input_scale, mode="bilinear",
                                 align_corners=False)
    return vlm.dense_features(images01)


# --- the path as one object --------------------------------------------------------------------

@dataclass
class OOVBranch:
    """What the out-of-vocabulary classifier needs for one vocabulary.

    vlm: a VisionLanguageModel with ``dense_features`` (None when every output carries
        ``vlm_dense``, the shared-backbone case); text_emb: (V,D) the VLM's text embeddings of
        the vocabulary; weight: (V,) ensemble weights w_c (see :func:`class_weights`).
    """

    vlm: object
    text_emb: Tensor
    weight: Tensor
    pooling: str = "soft"
    logit_scale: float = 100.0
    renormalize: bool = True
    input_scale: float = 1.0  # images upsampled by this before the VLM's dense_features
    pixel_weight: float = 0.0  # lambda of the per-pixel term D^lambda (module docstring, step 2)

    def dense(self, outputs: dict, images01: Tensor) -> Tensor:
        """(B,D,h,w): the shared backbone's ``vlm_dense`` when present, else a VLM forward."""
        feats = outputs.get("vlm_dense")
        if feats is None:
            if self.vlm is None:
                raise ValueError("no vlm_dense in the outputs and no VLM to compute it")
            feats = vlm_dense_features(self.vlm, images01, self.input_scale)
        return feats.to(outputs["pred_masks"].device)

    def p_out(self, outputs: dict, dense: Tensor) -> Tensor:
        """(B,Q,V) out-of-vocabulary probabilities of every proposal; dense: (B,D,h,w) from
        :meth:`dense`."""
        pooled = mask_pool(dense, outputs["pred_masks"], self.pooling)
        return oov_probs(pooled, self.text_emb, self.logit_scale)

    def pixel_term(self, dense: Tensor, size: tuple[int, int]) -> Tensor:
        """(B,V,H,W) D^lambda at the masks' ``size`` (the factor of step 2)."""
        probs = pixel_probs(dense, self.text_emb, size, self.logit_scale)
        return probs.clamp_min(EPS) ** self.pixel_weight

    def combine(self, p_in: Tensor, p_out: Tensor, p_void: Tensor | None,
                weight: Tensor | None = None) -> Tensor:
        """Geometric ensemble, renormalised over c, times (1 - p_void) in background_embedding."""
        p = geometric_ensemble(p_in, p_out, self.weight if weight is None else weight)
        if self.renormalize:
            p = p / p.sum(-1, keepdim=True).clamp_min(EPS)
        if p_void is not None:
            p = p * (1 - p_void)[..., None]
        return p


class SemanticInference:
    """Segmenter outputs -> scores -> labels under one protocol (see the module docstring).

    Args:
        has_background: the segmenter has a no-object column.
        protocol: one of :data:`PROTOCOLS`.
        oov: the out-of-vocabulary branch (``ensemble`` and ``vlm``).
        two_stage: callable ``(outputs, images01, p_in) -> (B,Q,V)`` crop-ensembled probabilities
            (``two_stage``).
        seen_positions, calibration: the seen-class calibration of step 3.
        segmenter_calibration: added to ``calibration`` under the ``segmenter`` protocol only
            (zsseg / ZegFormer / ZegCLIP calibrate the segmenter alone; the ensemble's weights
            already balance seen against unseen classes).
    """

    def __init__(self, has_background: bool, protocol: str = "segmenter",
                 oov: OOVBranch | None = None, two_stage: object = None,
                 seen_positions: list[int] | None = None, calibration: float = 0.0,
                 segmenter_calibration: float = 0.0) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol={protocol!r}; expected one of {', '.join(PROTOCOLS)}")
        if protocol in ("ensemble", "vlm") and oov is None:
            raise ValueError(f"protocol {protocol!r} needs an out-of-vocabulary branch")
        if protocol == "two_stage" and two_stage is None:
            raise ValueError("protocol 'two_stage' needs a crop classifier")
        self.has_background = has_background
        self.protocol = protocol
        self.oov = oov
        self.two_stage = two_stage
        self.seen_positions = list(seen_positions or [])
        self.calibrations = {p: calibration for p in PROTOCOLS}
        self.calibrations["segmenter"] += segmenter_calibration

    @property
    def calibration(self) -> float:
        """The seen-class calibration of this path's own protocol."""
        return self.calibrations[self.protocol]

    def calibration_for(self, protocol: str) -> float:
        return self.calibrations[protocol]

    def proposal_probs(self, outputs: dict, images01: Tensor | None = None,
                       protocols: tuple[str, ...] | None = None,
                       dense: Tensor | None = None) -> dict[str, Tensor]:
        """{protocol: (B,Q,V)} for ``protocols`` (default: this path's own), sharing work.

        images01: (B,3,H,W) in [0,1], needed by the VLM branches unless outputs have vlm_dense
        or ``dense`` (B,D,h,w) already holds the VLM's dense features.
        """
        protocols = protocols or (self.protocol,)
        p_in, p_void = proposal_probs(outputs["pred_logits"].float(), self.has_background)
        result: dict[str, Tensor] = {}
        p_out = None
        for name in protocols:
            if name == "segmenter":
                result[name] = p_in
            elif name in ("ensemble", "vlm"):
                if self.oov is None:
                    raise ValueError(f"protocol {name!r} needs an out-of-vocabulary branch")
                if p_out is None:
                    if dense is None:
                        dense = self.oov.dense(outputs, images01)
                    p_out = self.oov.p_out(outputs, dense)
                weight = torch.ones_like(self.oov.weight) if name == "vlm" else None
                result[name] = self.oov.combine(p_in, p_out, p_void, weight)
            elif name == "two_stage":
                if self.two_stage is None:
                    raise ValueError("protocol 'two_stage' needs a crop classifier")
                result[name] = self.two_stage(outputs, images01, p_in)
            else:
                raise ValueError(f"protocol={name!r}; expected one of {', '.join(PROTOCOLS)}")
        return result

    def scores(self, outputs: dict, images01: Tensor | None = None,
               protocols: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """{protocol: (B,V,h,w)} semantic scores at the mask resolution (not normalised)."""
        masks = outputs["pred_masks"].float()
        protocols = protocols or (self.protocol,)
        pixel = "ensemble" in protocols and self.oov is not None and self.oov.pixel_weight > 0
        dense = self.oov.dense(outputs, images01) if pixel else None
        scores = {name: aggregate(p, masks) for name, p in
                  self.proposal_probs(outputs, images01, protocols, dense).items()}
        if pixel:
            scores["ensemble"] = scores["ensemble"] * self.oov.pixel_term(dense, masks.shape[-2:])
        return scores

    def probs(self, outputs: dict, images01: Tensor | None, out_size: tuple[int, int]) -> Tensor:
        """(B,V,H,W) class probabilities of this path's protocol at ``out_size``."""
        return class_probs(self.scores(outputs, images01)[self.protocol], out_size)

    def labels(self, outputs: dict, images01: Tensor | None, out_size: tuple[int, int],
               protocols: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """{protocol: (B,H,W) long vocabulary positions}."""
        return {name: scores_to_labels(s, out_size, self.seen_positions,
                                       self.calibration_for(name))
                for name, s in self.scores(outputs, images01, protocols).items()}
