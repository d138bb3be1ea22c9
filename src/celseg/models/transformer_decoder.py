"""Mask2Former-style transformer decoder with learned queries and masked cross-attention.

Each layer: masked cross-attention to one level of the pixel decoder's memory (round robin,
coarse to fine), self-attention among queries, feed-forward. Before the first layer and after
every layer, :meth:`TransformerDecoder.prediction_heads` reads the queries out into a class
feature and a mask embedding; the mask logits are ``einsum("bqc,bchw->bqhw", mask_embed,
mask_features)`` (:meth:`celseg.models.mask_features.MaskFeatures.logits`). In masked
attention a query only attends where its previous mask has sigmoid >= 0.5 (all pixels if none
does).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from celseg.models.mask_features import MaskFeatures


def sine_position_embedding(x: torch.Tensor, dim: int) -> torch.Tensor:
    """2-D sine/cosine position code of a (B, C, h, w) map -> (B, h*w, dim), dim % 4 == 0."""
    b, _, h, w = x.shape
    quarter = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(quarter, device=x.device, dtype=torch.float32) / quarter))
    ys = (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5) / h * 2 * math.pi
    xs = (torch.arange(w, device=x.device, dtype=torch.float32) + 0.5) / w * 2 * math.pi
    py = ys[:, None] * freq[None]  # (h, quarter)
    px = xs[:, None] * freq[None]  # (w, quarter)
    pos = torch.cat(
        [
            py.sin()[:, None].expand(h, w, quarter),
            py.cos()[:, None].expand(h, w, quarter),
            px.sin()[None].expand(h, w, quarter),
            px.cos()[None].expand(h, w, quarter),
        ],
        dim=-1,
    )  # (h, w, dim)
    return pos.reshape(1, h * w, dim).expand(b, -1, -1).to(x.dtype)


class MLP(nn.Sequential):
    """``num_layers`` linear layers with ReLU between them."""

    def __init__(self, din: int, dhidden: int, dout: int, num_layers: int) -> None:
        dims = [din] + [dhidden] * (num_layers - 1) + [dout]
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < num_layers - 1:
                layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def blocked_positions(mask_logits: torch.Tensor) -> torch.Tensor:
    """(B,Q,h,w) mask logits -> (B,Q,h*w) bool attention mask, True where a query may not
    attend: where sigmoid < 0.5, except for a query whose mask is empty (it would attend to
    nothing and give NaN), which attends everywhere."""
    blocked = mask_logits.flatten(2) < 0
    return blocked & ~blocked.all(-1, keepdim=True)


class DecoderLayer(nn.Module):
    """Cross-attention -> self-attention -> FFN, post-norm, query position added to q and k."""

    def __init__(self, dim: int, nheads: int, dim_feedforward: int) -> None:
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(dim, nheads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, nheads, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim_feedforward), nn.ReLU(inplace=True), nn.Linear(dim_feedforward, dim)
        )
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self,
        queries: torch.Tensor,
        query_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        attn_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """queries/query_pos (B,Q,d); memory/memory_pos (B,L,d); attn_mask (B,Q,L) bool, True
        where a query may not attend."""
        if attn_mask is not None:  # per head, batch-major: the module's (B*heads, Q, L) layout
            attn_mask = attn_mask.repeat_interleave(self.cross_attn.num_heads, dim=0)
        out = self.cross_attn(queries + query_pos, memory + memory_pos, memory,
                              attn_mask=attn_mask, need_weights=False)[0]
        queries = self.norm1(queries + out)
        qk = queries + query_pos
        out = self.self_attn(qk, qk, queries, need_weights=False)[0]
        queries = self.norm2(queries + out)
        return self.norm3(queries + self.ffn(queries))


class TransformerDecoder(nn.Module):
    """Q learned queries decoded against multi-scale memory.

    Args:
        hidden_dim: query and memory width (the pixel decoder's ``conv_dim``).
        mask_dim: width of the per-pixel mask embedding.
        num_queries, num_layers, nheads, dim_feedforward: sizes.
        num_levels: number of memory levels (3: strides 32, 16, 8).
        masked_attention: restrict cross-attention to each query's previous mask.

    ``forward(memory, mask_features)``: ``memory`` is one (B,hidden_dim,h,w) map per level,
    ``mask_features`` a :class:`MaskFeatures` or a (B,mask_dim,H,W) tensor. It returns a list of
    predictions, each a dict with ``class_feat`` (B,Q,hidden_dim), ``mask_embed`` (B,Q,mask_dim)
    and ``pred_masks`` (B,Q,H,W) logits: in training mode all ``num_layers + 1`` of them (the
    first before any layer, for the auxiliary losses), in eval mode the final one alone. The
    computation is the same in both modes.
    """

    def __init__(
        self,
        hidden_dim: int = 128,
        mask_dim: int = 128,
        num_queries: int = 16,
        num_layers: int = 3,
        nheads: int = 4,
        dim_feedforward: int = 512,
        num_levels: int = 3,
        masked_attention: bool = True,
    ) -> None:
        super().__init__()
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_pos = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_levels, hidden_dim)
        self.layers = nn.ModuleList(
            [DecoderLayer(hidden_dim, nheads, dim_feedforward) for _ in range(num_layers)]
        )
        self.norm = nn.LayerNorm(hidden_dim)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.num_levels = num_levels
        self.hidden_dim = hidden_dim
        self.masked_attention = masked_attention

    def prediction_heads(
        self, queries: torch.Tensor, mask_features: MaskFeatures,
        attn_size: tuple[int, int] | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """queries (B,Q,d) -> class_feat (B,Q,d), mask_embed (B,Q,mask_dim), and the next
        layer's attention mask (B,Q,h*w) bool at ``attn_size`` (h, w) (None when not given).

        The attention mask thresholds the mask logits bilinearly resized to the memory level's
        size, computed at that size directly (:meth:`MaskFeatures.resized_logits`); the
        stride-4 logits are left to the caller, which computes those it returns in one product.
        """
        class_feat = self.norm(queries)
        mask_embed = self.mask_embed(class_feat)
        attn_mask = None
        if attn_size is not None:
            attn_mask = blocked_positions(
                mask_features.resized_logits(mask_embed.detach(), attn_size))
        return class_feat, mask_embed, attn_mask

    def forward(
        self, memory: list[torch.Tensor], mask_features: MaskFeatures | torch.Tensor,
    ) -> list[dict[str, torch.Tensor]]:
        if isinstance(mask_features, torch.Tensor):
            mask_features = MaskFeatures(mask_features)
        batch = mask_features.fine.shape[0]
        srcs, poss, sizes = [], [], []  # per level: (B,L,d) tokens, their positions, (h, w)
        for i, m in enumerate(memory[: self.num_levels]):
            sizes.append(tuple(m.shape[-2:]))
            poss.append(sine_position_embedding(m, self.hidden_dim))
            # (B,d,h,w) -> (B,L,d) row-major, so that memory + memory_pos is not strided
            srcs.append(m.flatten(2).transpose(1, 2).contiguous() + self.level_embed.weight[i])
        queries = self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)  # (B,Q,d)
        query_pos = self.query_pos.weight.unsqueeze(0).expand(batch, -1, -1)
        feats, embeds = [], []
        for i, layer in enumerate(self.layers):
            level = i % self.num_levels
            attn_size = sizes[level] if self.masked_attention else None
            class_feat, mask_embed, attn_mask = self.prediction_heads(queries, mask_features,
                                                                      attn_size)
            feats.append(class_feat)
            embeds.append(mask_embed)
            queries = layer(queries, query_pos, srcs[level], poss[level], attn_mask)
        class_feat, mask_embed, _ = self.prediction_heads(queries, mask_features, None)
        feats.append(class_feat)
        embeds.append(mask_embed)
        if not self.training:  # only the final prediction is returned
            feats, embeds = feats[-1:], embeds[-1:]
        # the returned predictions' stride-4 masks in one product over the mask features (in
        # training its backward is one product too)
        masks = mask_features.logits(torch.cat(embeds, 1)).split(queries.shape[1], 1)
        if len(masks) > 1:  # the loss reads each prediction's (B,Q,H,W) whole: contiguous
            masks = [m.contiguous() for m in masks]
        return [{"class_feat": f, "mask_embed": e, "pred_masks": m}
                for f, e, m in zip(feats, embeds, masks, strict=True)]
