"""The per-pixel mask embedding, and the one place mask logits are computed from it.

A query's mask logits are M = einsum("bqc,bchw->bqhw", e, F) for its mask embedding e (B,Q,C)
and the pixel decoder's mask features F (B,C,H/4,W/4). When F is a 1 x 1 projection of a sum
of a stride-4 map and a bilinearly upsampled stride-8 map, F = W (fine + up(coarse)) + b (the
``pointwise`` pixel decoder), the projection, the sum and the upsampling are all linear, so

    M = einsum(W^T e, fine) + up(einsum(W^T e, coarse)) + <e, b>

exactly (up to float rounding): the stride-4 projection and the upsampling of C channels are
replaced by a (Q, C) product and the upsampling of Q maps at stride 8.

The decoder's masked attention reads the logits bilinearly resized to a memory level's size,
and such a resize is a (h, H) row matrix and a (w, W) column matrix, A M B^T. At a downsampling
factor r it reads only the two rows (columns) nearest each output's centre, so
:meth:`MaskFeatures.resized_logits` computes M on those rows alone (a quarter of them for the
stride-32 level at r = 8, half at r = 4) and resizes the columns as a matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _linear(n_in: int, n_out: int) -> Tensor:
    """(n_out, n_in) weights of a 1-D linear resize, align_corners=False: F.interpolate's own,
    read off by resizing the identity (so they are the kernel's, not a second formula)."""
    eye = torch.eye(n_in, dtype=torch.float64)[None]  # channel k: the k-th unit vector
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].T


@dataclass(frozen=True)
class _Axis:
    """One axis of resizing ``fine + up(coarse)`` to n_out: the fine rows read (None: all),
    their (n_out, rows) weights, and the whole (n_out, n_fine) matrix; the same for the coarse
    rows, with the weights of upsampling then resizing."""

    rows: Tensor | None
    weights: Tensor
    full: Tensor
    coarse_rows: Tensor | None
    coarse_weights: Tensor | None
    coarse_full: Tensor | None


def _support(a: Tensor) -> tuple[Tensor | None, Tensor]:
    """(n_out, n_in) weights -> (the inputs they read, None for all; those columns)."""
    rows = a.abs().sum(0).nonzero().flatten()
    return (None, a) if len(rows) == a.shape[1] else (rows, a[:, rows])


def _axis(n_fine: int, n_coarse: int, n_out: int, device: torch.device,
          dtype: torch.dtype) -> _Axis:
    """The :class:`_Axis` of n_fine (coarse n_coarse, 0 for none) -> n_out, built in float64,
    then cast (small: at most n_out x n_fine)."""
    a = _linear(n_fine, n_out)
    c = a @ _linear(n_coarse, n_fine) if n_coarse else None
    parts = (*_support(a), a, *(_support(c) if n_coarse else (None, None)), c)
    return _Axis(*(None if t is None else t.to(device, dtype if t.is_floating_point() else None)
                   for t in parts))


def _against(embed: Tensor, x: Tensor) -> Tensor:
    """einsum("bqc,bchw->bqhw", embed, x) as one batched product over the flattened map: the
    same values and gradients (checked on training shapes), without einsum's own reshaping."""
    return torch.matmul(embed, x.flatten(2)).unflatten(2, x.shape[-2:])


def _row_logits(embed: Tensor, x: Tensor, rows: Tensor | None) -> Tensor:
    """(B,Q,C) embeddings against the ``rows`` (all: None) of (B,C,h,w) -> (B,Q,rows,w)."""
    return _against(embed, x if rows is None else x.index_select(2, rows))


@dataclass(frozen=True)
class MaskFeatures:
    """Mask features, held as ``fine`` (B,C,H/4,W/4) or factored.

    Args:
        fine: the stride-4 map (the whole features when nothing else is given).
        coarse: (B,C,H/8,W/8) map added after bilinear upsampling to ``fine``'s size, or None.
        proj: the 1 x 1 projection (mask_dim <- C) applied to ``fine + up(coarse)``, or None.
    """

    fine: Tensor
    coarse: Tensor | None = None
    proj: nn.Conv2d | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(H/4, W/4), the size of the mask logits."""
        return tuple(self.fine.shape[-2:])

    def _project(self, embed: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B,Q,mask_dim) -> (the embedding against ``fine``'s channels (B,Q,C), the
        projection's bias term (B,Q,1,1) or None)."""
        if self.proj is None:
            return embed, None
        bias = None if self.proj.bias is None else (embed @ self.proj.bias)[..., None, None]
        return embed @ self.proj.weight.flatten(1), bias

    def logits(self, embed: Tensor) -> Tensor:
        """(B,Q,mask_dim) mask embeddings -> (B,Q,H/4,W/4) mask logits."""
        if self.proj is None and self.coarse is None:
            return _against(embed, self.fine)
        embed, bias = self._project(embed)
        b, q = embed.shape[:2]
        if self.coarse is None:
            base = bias.expand(b, q, *self.size) if bias is not None else None
        else:  # the bias rides on the coarse part: bilinear resizing keeps constants
            base = _against(embed, self.coarse)
            if bias is not None:
                base = base + bias
            base = F.interpolate(base, size=self.size, mode="bilinear", align_corners=False)
        fine = self.fine.flatten(2)  # (B,C,HW)
        out = embed @ fine if base is None else torch.baddbmm(base.flatten(2), embed, fine)
        return out.view(b, q, *self.size)

    def resized_logits(self, embed: Tensor, size: tuple[int, int]) -> Tensor:
        """(B,Q,mask_dim) -> (B,Q,h,w): ``F.interpolate(self.logits(embed), size, "bilinear",
        align_corners=False)`` (equal up to float rounding), computed on the rows that resize
        reads."""
        size = tuple(size)
        if size == self.size:
            return self.logits(embed)
        embed, bias = self._project(embed)
        coarse = (0, 0) if self.coarse is None else tuple(self.coarse.shape[-2:])
        # whole rows are gathered (a contiguous copy); the columns are resized as a product
        rows, cols = ((self.size[i], coarse[i], size[i]) for i in (0, 1))
        ys = _axis(*rows, embed.device, embed.dtype)
        xs = ys if cols == rows else _axis(*cols, embed.device, embed.dtype)  # square: the same
        out = ys.weights @ _row_logits(embed, self.fine, ys.rows) @ xs.full.T
        if self.coarse is not None:
            part = _row_logits(embed, self.coarse, ys.coarse_rows)
            out = out + ys.coarse_weights @ part @ xs.coarse_full.T
        return out if bias is None else out + bias  # the weights of each output sum to 1

    def dense(self) -> Tensor:
        """The (B,mask_dim,H/4,W/4) features themselves (for tests and inspection)."""
        x = self.fine
        if self.coarse is not None:
            x = x + F.interpolate(self.coarse, size=self.size, mode="bilinear",
                                  align_corners=False)
        return x if self.proj is None else self.proj(x)
