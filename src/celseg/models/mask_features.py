"""The per-pixel mask embedding, and the one place mask logits are computed from it.

A query's mask logits are M = einsum("bqc,bchw->bqhw", e, F) for its mask embedding e (B,Q,C)
and the pixel decoder's mask features F (B,C,H/4,W/4). When F is a 1 x 1 projection of a sum
of a stride-4 map and a bilinearly upsampled stride-8 map, F = W (fine + up(coarse)) + b (the
``pointwise`` pixel decoder), the projection, the sum and the upsampling are all linear, so

    M = einsum(W^T e, fine) + up(einsum(W^T e, coarse)) + <e, b>

exactly (up to float rounding): the stride-4 projection and the upsampling of C channels are
replaced by a (Q, C) product and the upsampling of Q maps at stride 8.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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

    def logits(self, embed: Tensor) -> Tensor:
        """(B,Q,mask_dim) mask embeddings -> (B,Q,H/4,W/4) mask logits."""
        if self.proj is None and self.coarse is None:
            return torch.einsum("bqc,bchw->bqhw", embed, self.fine)
        bias = None
        if self.proj is not None:
            if self.proj.bias is not None:
                bias = (embed @ self.proj.bias)[..., None, None]  # (B,Q,1,1)
            embed = embed @ self.proj.weight.flatten(1)  # (B,Q,C)
        b, q = embed.shape[:2]
        if self.coarse is None:
            base = bias.expand(b, q, *self.size) if bias is not None else None
        else:  # the bias rides on the coarse part: bilinear resizing keeps constants
            base = torch.einsum("bqc,bchw->bqhw", embed, self.coarse)
            if bias is not None:
                base = base + bias
            base = F.interpolate(base, size=self.size, mode="bilinear", align_corners=False)
        fine = self.fine.flatten(2)  # (B,C,HW)
        out = embed @ fine if base is None else torch.baddbmm(base.flatten(2), embed, fine)
        return out.view(b, q, *self.size)

    def dense(self) -> Tensor:
        """The (B,mask_dim,H/4,W/4) features themselves (for tests and inspection)."""
        x = self.fine
        if self.coarse is not None:
            x = x + F.interpolate(self.coarse, size=self.size, mode="bilinear",
                                  align_corners=False)
        return x if self.proj is None else self.proj(x)
