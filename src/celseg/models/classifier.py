"""Open-vocabulary classification of query features against frozen text embeddings.

Notation: e_q = normalise(W f_q) is the query's class embedding in the text space,
t_c the text embedding of class c, s_qc = cos(e_q, t_c), z_qc = scale * s_qc. The scale is
learned as its log (init ``logit_scale_init``, 100 as in the peers). In background_embedding
mode a learnable background (no-object) embedding b is appended as the last column:
z_q,C = scale * cos(e_q, b). In background_free mode the module has no such parameter at all.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TextClassifier(nn.Module):
    """Cosine classifier over an input vocabulary.

    Args:
        hidden_dim: width of the decoder's class features.
        embed_dim: width D of the text embeddings.
        logit_scale_init: initial scale of the cosine logits.
        learn_logit_scale: learn the scale (else a fixed buffer).
        with_background: background_embedding mode, append a learnable no-object column.
    """

    def __init__(
        self,
        hidden_dim: int,
        embed_dim: int,
        logit_scale_init: float = 100.0,
        learn_logit_scale: bool = True,
        with_background: bool = False,
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_dim, embed_dim)
        log_scale = torch.tensor(math.log(logit_scale_init))
        if learn_logit_scale:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_logit_scale", log_scale)
        if with_background:
            self.background_embed = nn.Parameter(torch.randn(embed_dim) / math.sqrt(embed_dim))
        self.has_background = with_background
        self.embed_dim = embed_dim

    def forward(
        self, class_feat: torch.Tensor, text_emb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """class_feat (B,Q,hidden), text_emb (C,D) normalised -> logits (B,Q,C[+1]),
        class_embed (B,Q,D) normalised, logit_scale () tensor."""
        class_embed = F.normalize(self.proj(class_feat), dim=-1)
        classes = text_emb.to(device=class_embed.device, dtype=class_embed.dtype)
        if self.has_background:
            background = F.normalize(self.background_embed, dim=0).to(class_embed.dtype)
            classes = torch.cat([classes, background[None]], dim=0)
        scale = self.log_logit_scale.exp()
        # (B,Q,D) x (D,C): einsum("bqd,cd->bqc")'s values and gradients, without its reshapes
        logits = scale * torch.matmul(class_embed, classes.t())
        return logits, class_embed, scale
