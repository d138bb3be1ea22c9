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
2. Semantic scores S(c, x) = sum_q p(q, c) * sigmoid(M_q(x)) at the mask resolution.
3. Labels: S resized bilinearly to the output size, normalised over classes (S / sum_c S), the
   seen-class calibration subtracted from seen columns, argmax.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-6  # the one epsilon of the normalisation over classes
PROTOCOLS = ("segmenter", "ensemble", "vlm", "two_stage")
POOLINGS = ("soft", "binary")
# scores_to_labels resizes the whole map when more than this share of pixels are boundaries
# (at output sizes that are not integer multiples of the scores')
DENSE_SHARE = 0.25
# ... and, at integer multiples with calibration (whose normalisation every boundary pixel
# needs), when more than this share of the cells are boundaries: with every cell a boundary the
# cell route then costs 1.0-1.5x the whole map, at half of them about half as much again
CALIBRATED_CELL_SHARE = 0.5


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
    classes innermost (channels_last: :func:`scores_to_labels` reads them so)."""
    return aggregate_mask_probs(probs, mask_logits.sigmoid(), classes_last=True)


def aggregate_mask_probs(probs: Tensor, mask_probs: Tensor, classes_last: bool = False) -> Tensor:
    """S = sum_q p(q, c) m_q from the masks' probabilities m_q = sigmoid(M_q) at any points:
    (B,Q,C), (B,Q,...) -> (B,C,...). Linear in m, so S read bilinearly at points equals this
    of m read there (the pixel loss reads the Q masks, not the C scores).

    ``classes_last``: the same product as (B,N,Q) x (B,Q,C), so the result's memory has the
    classes innermost; equal up to float rounding (on the shipped model's shapes to the bit:
    an evaluation gives the same IoU for every class, docs/BENCHMARKS.md, session 13)."""
    if not classes_last:
        return torch.einsum("bqc,bq...->bc...", probs, mask_probs)
    flat = torch.bmm(mask_probs.flatten(2).transpose(1, 2), probs.to(mask_probs))  # (B,N,C)
    return flat.transpose(1, 2).unflatten(2, mask_probs.shape[2:])


def semantic_probs(pred_logits: Tensor, pred_masks: Tensor, has_background: bool) -> Tensor:
    """The segmenter's own semantic scores (B,C,h,w) in [0, Q], not normalised over classes."""
    return aggregate(proposal_probs(pred_logits, has_background)[0], pred_masks)


def normalize_classes(scores: Tensor) -> Tensor:
    """(B,C,...) scores -> S / sum_c S (the epsilon of the whole project)."""
    return scores / scores.sum(1, keepdim=True).clamp_min(EPS)


def calibrate(probs: Tensor, seen_positions: list[int] | Tensor | None,
              calibration: float) -> Tensor:
    """Subtract ``calibration`` from the seen columns (in place) of (B,C,...) probabilities."""
    if calibration and seen_positions is not None and len(seen_positions):
        seen = torch.as_tensor(seen_positions, dtype=torch.long, device=probs.device)
        probs[:, seen] -= calibration
    return probs


def class_probs(scores: Tensor, out_size: tuple[int, int]) -> Tensor:
    """(B,C,h,w) scores -> (B,C,H,W) resized bilinearly and normalised over classes."""
    if tuple(scores.shape[-2:]) != tuple(out_size):
        # contiguous: the resize of a channels_last map (as :func:`aggregate` holds it) rounds
        # differently, by up to 2e-7
        scores = F.interpolate(scores.float().contiguous(), size=tuple(out_size),
                               mode="bilinear", align_corners=False)
    return normalize_classes(scores)


def first_argmax(x: Tensor, dim: int) -> Tensor:
    """``x.argmax(dim)``: the index of the first maximum. ``max(dim).indices`` has the same tie
    rule and is 4-6x faster on CPU (torch 2.13; benchmarks/bench_labels.py)."""
    return x.max(dim).indices


def scores_to_labels(scores: Tensor, out_size: tuple[int, int],
                     seen_positions: list[int] | None = None, calibration: float = 0.0) -> Tensor:
    """(B,C,h,w) semantic scores -> (B,H,W) long vocabulary positions: the argmax of the scores
    resized bilinearly, normalised and calibrated (:func:`class_probs`, :func:`calibrate`).

    The (B,C,H,W) map is built only when most pixels need it. With k_c the calibration of class
    c and Z = sum_c S, argmax_c (S_c / Z - k_c) = argmax_c (S_c - k_c Z) wherever Z >= EPS, and
    that is linear in the four low-resolution taps of the bilinear resize. So where all four
    taps of an output pixel have the same argmax (and Z >= EPS), that class is the pixel's
    label; only the other pixels (class boundaries) are resized exactly: by cell when the
    output is an integer multiple of the input (:func:`_labels_by_cell`), else pixel by pixel,
    unless those pixels are more than ``DENSE_SHARE`` of the output (a noisy, e.g. untrained,
    model; by cell: with calibration, more than ``CALIBRATED_CELL_SHARE`` of the cells), where
    the whole map is resized instead, which is then cheaper. Equal to the full path up to
    float rounding.
    """
    size = tuple(int(v) for v in out_size)
    if tuple(scores.shape[-2:]) == size:
        return _dense_labels(scores, size, seen_positions, calibration)
    c, h, w = scores.shape[1:]
    by_cell = size[0] % h == 0 and size[1] % w == 0
    dense = scores = scores.float()
    if by_cell:  # its argmax and its gather of the boundaries' corners read classes innermost
        scores = scores.contiguous(memory_format=torch.channels_last)
    shifted, ok = scores, None
    if calibration and seen_positions is not None and len(seen_positions):
        total = scores.sum(1)  # (B,h,w)
        k = calibrate(scores.new_zeros(1, c), seen_positions, -calibration)[0]
        shifted = scores - k[:, None, None] * total[:, None]
        ok = total >= EPS
    low = first_argmax(shifted, 1)  # (B,h,w)

    def exact(blend: Tensor) -> Tensor:  # (N,C) resized scores -> (N,) labels
        if ok is not None:  # without calibration the normalisation cannot change the argmax
            blend = calibrate(normalize_classes(blend), seen_positions, calibration)
        return first_argmax(blend, 1)

    route = _labels_by_cell if by_cell else _labels_by_pixel
    labels = route(scores, low, ok, size, exact)
    if labels is None:  # too many boundaries
        return _dense_labels(dense, size, seen_positions, calibration)
    return labels


def _corner_scores(scores: Tensor, bb: Tensor, top: Tensor, bottom: Tensor, left: Tensor,
             right: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The (N,C) class scores of (B,C,h,w) ``scores`` at N cells' four corners: top-left,
    top-right, bottom-left, bottom-right (image bb, rows top / bottom, columns left / right)."""
    return (scores[bb, :, top, left], scores[bb, :, top, right], scores[bb, :, bottom, left],
            scores[bb, :, bottom, right])


def _bilinear(v00: Tensor, v01: Tensor, v10: Tensor, v11: Tensor, wy: Tensor,
              wx: Tensor) -> Tensor:
    """The bilinear blend of four taps (top-left, top-right, bottom-left, bottom-right) with
    the weights ``wy`` of the bottom row and ``wx`` of the right column, as F.interpolate."""
    return (1 - wy) * ((1 - wx) * v00 + wx * v01) + wy * ((1 - wx) * v10 + wx * v11)


def _labels_by_pixel(scores: Tensor, low: Tensor, ok: Tensor | None, size: tuple[int, int],
                     exact) -> Tensor | None:
    """Any output size: each output pixel's four taps are the corners of the low-resolution
    cell at (y0, x0) (the next row and column clamped to the map); where the cell is uniform,
    its class is the label, elsewhere (a boundary, or with ``ok`` Z < EPS at a corner) the
    pixel's taps are blended over every class and ``exact`` (N,C) -> (N,) labels them. None
    when those pixels are more than ``DENSE_SHARE`` of the output."""
    b, c, h, w = scores.shape
    y0, ly = _taps(size[0], h, scores.device)
    x0, lx = _taps(size[1], w, scores.device)
    rows = torch.arange(h + 1, device=low.device).clamp_max(h - 1)  # the last one repeated
    cols = torch.arange(w + 1, device=low.device).clamp_max(w - 1)
    below, beside = rows[1:], cols[1:]  # each cell's second row and column
    cell = _uniform_cells(low[:, rows][:, :, cols], torch.eq)  # (B,h,w)
    if ok is not None:
        cell &= _uniform_cells(ok[:, rows][:, :, cols], torch.logical_and)
    labels = torch.where(cell, low, -1)[:, y0][:, :, x0]  # (B,H,W)
    bb, yy, xx = (labels < 0).nonzero(as_tuple=True)
    if bb.numel() > DENSE_SHARE * labels.numel():
        return None
    if bb.numel():
        taps = _corner_scores(scores, bb, y0[yy], below[y0[yy]], x0[xx], beside[x0[xx]])
        labels[bb, yy, xx] = exact(_bilinear(*taps, ly[yy, None], lx[xx, None]))
    return labels


def _labels_by_cell(scores: Tensor, low: Tensor, ok: Tensor | None, size: tuple[int, int],
                    exact) -> Tensor | None:
    """Output size (ry h, rx w): the same labels as :func:`_labels_by_pixel`, by cell.

    With the map's edge rows and columns repeated once on each side (which is what the clamp of
    the bilinear resize does), every output pixel falls in one of (h+1) x (w+1) cells, each
    covering an ry x rx block at the same weights. A uniform cell fills its block; the blocks
    of the others are one product of the (ry*rx, 4) weights with their (4, M*C) corners, read
    in one gather from the scores with the classes innermost. The geometry (which source pixel
    is each cell's corner, the weights) is built once per size (:func:`_cell_geometry`).
    Without calibration it never falls back to resizing the whole map: even when every cell is
    a boundary it costs 0.75-0.77x that. With calibration, whose normalisation the boundary
    pixels need, that worst case cost 1.0-1.5x (``benchmarks/bench_labels.py --random-scores
    --calibration 0.1``), so it returns None (resize the whole map) when more than
    ``CALIBRATED_CELL_SHARE`` of the cells are boundaries. Trained models' 13-28 % boundary
    cells make it 3-6x cheaper (docs/bench_labels_cpu.json).
    """
    b, c, h, w = scores.shape
    geo = _cell_geometry(h, w, size[0], size[1], scores.device)
    ry, rx = size[0] // h, size[1] // w
    padded = low.reshape(b, h * w)[:, geo.pad].view(b, h + 2, w + 2)
    cell = _uniform_cells(padded, torch.eq)  # (B,h+1,w+1)
    if ok is not None:
        cell &= _uniform_cells(ok.reshape(b, h * w)[:, geo.pad].view(b, h + 2, w + 2),
                               torch.logical_and)
    bb, jj, kk = (~cell).nonzero(as_tuple=True)  # the boundary cells
    if ok is not None and bb.numel() > CALIBRATED_CELL_SHARE * cell.numel():
        return None
    # (B, h+1, ry, w+1, rx): each cell's block filled with its top-left corner's class
    canvas = padded[:, :-1, :-1, None, None].expand(b, h + 1, w + 1, ry, rx)
    canvas = canvas.permute(0, 1, 3, 2, 4).contiguous()
    if bb.numel():
        source = geo.corners[:, jj, kk]  # (4,M) flat pixels of each corner
        if b > 1:
            source = source + bb * (h * w)
        flat = scores.permute(0, 2, 3, 1).reshape(b * h * w, c)  # classes innermost
        taps = flat.index_select(0, source.view(-1)).view(4, -1)  # (4, M*C)
        blend = geo.weights.to(scores) @ taps  # (ry*rx, M*C)
        canvas[bb, jj, :, kk, :] = exact(blend.view(-1, c)).view(ry * rx, -1).t().view(
            -1, ry, rx)
    oy, ox = _block_offset(ry), _block_offset(rx)
    out = canvas.view(b, (h + 1) * ry, (w + 1) * rx)
    return out[:, oy:oy + size[0], ox:ox + size[1]].contiguous()


def _uniform_cells(padded: Tensor, same) -> Tensor:
    """(B,H+1,W+1) corner map -> (B,H,W) True where ``same`` holds across each cell's four
    corners: its two rows' horizontal pairs, and its left column's vertical pair."""
    across = same(padded[:, :, :-1], padded[:, :, 1:])  # (B,h+2,w+1)
    return across[:, :-1] & across[:, 1:] & same(padded[:, :-1, :-1], padded[:, 1:, :-1])


@dataclass(frozen=True)
class _CellGeometry:
    """The by-cell route's constants for one (h, w) -> (H, W): ``pad`` ((h+2)*(w+2),) the flat
    source pixel of each pixel of the edge-padded map; ``corners`` (4, h+1, w+1) the flat
    source pixel of each cell's top-left, top-right, bottom-left and bottom-right corner;
    ``weights`` (ry*rx, 4) the bilinear weights of the four corners across a block."""

    pad: Tensor
    corners: Tensor
    weights: Tensor


@functools.lru_cache(maxsize=32)
def _cell_geometry(h: int, w: int, out_h: int, out_w: int,
                   device: torch.device) -> _CellGeometry:
    """Built outside inference mode (the cache outlives it)."""
    with torch.inference_mode(False):
        rows = (torch.arange(h + 2) - 1).clamp(0, h - 1)  # padded -> source
        cols = (torch.arange(w + 2) - 1).clamp(0, w - 1)
        pad = (rows[:, None] * w + cols[None]).view(-1)
        top, bottom = rows[:-1, None] * w, rows[1:, None] * w
        left, right = cols[None, :-1], cols[None, 1:]
        corners = torch.stack([top + left, top + right, bottom + left, bottom + right])
        wy, wx = _block_weights(out_h // h, h, out_h), _block_weights(out_w // w, w, out_w)
        weights = torch.stack([(1 - wy)[:, None] * (1 - wx), (1 - wy)[:, None] * wx,
                               wy[:, None] * (1 - wx), wy[:, None] * wx], -1)  # (ry,rx,4)
        return _CellGeometry(pad.to(device), corners.to(device),
                             weights.view(-1, 4).to(device))


def _block_offset(r: int) -> int:
    """Where output pixel 0 lies in the first cell's block of r (cells of the padded map)."""
    return -math.ceil(-r / 2 - 0.5)


def _block_weights(r: int, in_len: int, out_len: int) -> Tensor:
    """(r,) bilinear weights of the second tap across one cell's block (as :func:`_taps`)."""
    virtual = torch.arange(r, dtype=torch.float32) + r - _block_offset(r)  # a cell inside
    src = (virtual + 0.5) * (in_len / out_len) - 0.5
    return src - src.floor()


def _dense_labels(scores: Tensor, size: tuple[int, int], seen_positions: list[int] | None,
                  calibration: float) -> Tensor:
    """The reference route: the whole (B,C,H,W) map resized, normalised, calibrated, argmax."""
    return first_argmax(calibrate(class_probs(scores, size), seen_positions, calibration), 1)


def _taps(out_len: int, in_len: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Bilinear taps of a resize along one axis (``align_corners=False``, as F.interpolate):
    the first source index i0 (out_len,) and the weight (out_len,) of the second,
    min(i0 + 1, in_len - 1)."""
    src = (torch.arange(out_len, device=device, dtype=torch.float32) + 0.5) * (in_len / out_len)
    src = (src - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp_max(in_len - 1)
    return i0, src - i0


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

    def dense(self, outputs: dict, images01: Tensor) -> Tensor:
        """(B,D,h,w): the shared backbone's ``vlm_dense`` when present, else a VLM forward."""
        feats = outputs.get("vlm_dense")
        if feats is None:
            if self.vlm is None:
                raise ValueError("no vlm_dense in the outputs and no VLM to compute it")
            if self.input_scale != 1.0:
                images01 = F.interpolate(images01, scale_factor=self.input_scale,
                                         mode="bilinear", align_corners=False)
            feats = self.vlm.dense_features(images01)
        return feats.to(outputs["pred_masks"].device)

    def p_out(self, outputs: dict, images01: Tensor) -> Tensor:
        """(B,Q,V) out-of-vocabulary probabilities of every proposal."""
        pooled = mask_pool(self.dense(outputs, images01), outputs["pred_masks"], self.pooling)
        return oov_probs(pooled, self.text_emb, self.logit_scale)

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
    """

    def __init__(self, has_background: bool, protocol: str = "segmenter",
                 oov: OOVBranch | None = None, two_stage: object = None,
                 seen_positions: list[int] | None = None, calibration: float = 0.0) -> None:
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
        self.calibration = calibration

    def proposal_probs(self, outputs: dict, images01: Tensor | None = None,
                       protocols: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """{protocol: (B,Q,V)} for ``protocols`` (default: this path's own), sharing work.

        images01: (B,3,H,W) in [0,1], needed by the VLM branches unless outputs have vlm_dense.
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
                    p_out = self.oov.p_out(outputs, images01)
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
        return {name: aggregate(p, masks)
                for name, p in self.proposal_probs(outputs, images01, protocols).items()}

    def probs(self, outputs: dict, images01: Tensor | None, out_size: tuple[int, int]) -> Tensor:
        """(B,V,H,W) class probabilities of this path's protocol at ``out_size``."""
        return class_probs(self.scores(outputs, images01)[self.protocol], out_size)

    def labels(self, outputs: dict, images01: Tensor | None, out_size: tuple[int, int],
               protocols: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """{protocol: (B,H,W) long vocabulary positions}."""
        return {name: scores_to_labels(s, out_size, self.seen_positions, self.calibration)
                for name, s in self.scores(outputs, images01, protocols).items()}
