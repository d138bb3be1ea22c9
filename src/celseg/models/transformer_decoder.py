"""Mask2Former-style transformer decoder with learned queries and masked cross-attention.

Each layer: masked cross-attention to one level of the pixel decoder's memory (round robin,
coarse to fine), self-attention among queries, feed-forward. Before the first layer and after
every layer the queries are read out into a mask embedding and a class feature; the mask
logits are ``einsum("bqc,bchw->bqhw", mask_embed, mask_features)``
(:meth:`celseg.models.mask_features.MaskFeatures.logits`). In masked attention a
query only attends where its previous mask has sigmoid >= 0.5 (all pixels if none does).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from celseg.models.mask_features import MaskFeatures
from celseg.models.traced_head import weights_key


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


def attend(mha: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor,
           value: torch.Tensor, blocked: torch.Tensor | None) -> torch.Tensor:
    """``mha(query, key, value, attn_mask=blocked per head, need_weights=False)[0]`` for a
    batch-first module without dropout, bias on its projections and one embedding size: the same
    projections and ``scaled_dot_product_attention``, without the module's bookkeeping (about
    25 operators fewer per call in a trace). Its outputs are bit-identical to the module's
    (tests/test_models.py), but its weights' gradients sum the batch in another order, so
    training keeps the module's own forward.

    query (B,Q,d); key, value (B,L,d); blocked (B,Q,L) bool, True where a query may not attend.
    """
    b, q_len, dim = query.shape
    heads = mha.num_heads
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    q = F.linear(query, w_q, b_q).view(b, q_len, heads, -1).transpose(1, 2)
    k = F.linear(key, w_k, b_k).view(b, key.shape[1], heads, -1).transpose(1, 2)
    v = F.linear(value, w_v, b_v).view(b, value.shape[1], heads, -1).transpose(1, 2)
    bias = None  # (B,1,Q,L) for every head, additive: what the module adds for a bool mask
    if blocked is not None:
        bias = torch.where(blocked[:, None], -math.inf, 0.0).to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B,heads,Q,d/heads)
    return mha.out_proj(out.transpose(1, 2).reshape(b, q_len, dim))


class DecoderLayer(nn.Module):
    """Cross-attention -> self-attention -> FFN, post-norm, query position added to q and k.

    Wherever autograd records, the attentions run through ``nn.MultiheadAttention.forward``;
    without it through :func:`attend` (equal outputs)."""

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

    def _attention(self, mha: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor,
                   value: torch.Tensor, blocked: torch.Tensor | None) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return attend(mha, query, key, value, blocked)
        if blocked is not None:  # per head, batch-major: the module's (B*heads, Q, L) layout
            blocked = blocked.repeat_interleave(mha.num_heads, dim=0)
        return mha(query, key, value, attn_mask=blocked, need_weights=False)[0]

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
        out = self._attention(self.cross_attn, queries + query_pos, memory + memory_pos, memory,
                              attn_mask)
        queries = self.norm1(queries + out)
        qk = queries + query_pos
        out = self._attention(self.self_attn, qk, qk, queries, None)
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

    ``forward(memory, mask_features)`` (a :class:`MaskFeatures` or a (B,mask_dim,h,w) tensor)
    returns one dict per prediction (``num_layers + 1``: the
    first before any layer, the last after the final layer) with ``class_feat (B,Q,hidden_dim)``,
    ``mask_embed (B,Q,mask_dim)`` and ``pred_masks (B,Q,h,w)`` logits at mask_features' size.

    Every layer's attention mask is computed at its memory level's size alone, on the rows the
    bilinear resize of the stride-4 masks reads (:meth:`MaskFeatures.resized_logits`; equal to
    resizing them up to float rounding). The stride-4 masks are computed only for the returned
    predictions, all in one product over the mask features (in training its backward is then one
    product too; the decoder's forward and backward at 128 px, batch 8 took 89.1 -> 82.5 ms,
    benchmarks/bench_attn_masks.py, docs/bench_attn_masks_cpu_training.json). (Resizing the mask
    features first would be exact too, but slower for Q < mask_dim: measured 23 vs 13 ms at
    512 px.) ``forward(..., all_predictions=False)`` (inference) returns the final prediction
    only.
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
        self.nheads = nheads
        self.hidden_dim = hidden_dim
        self.masked_attention = masked_attention
        self._positions: dict[tuple, torch.Tensor] = {}  # not state: rebuilt on demand
        self._first_embed: tuple[tuple, torch.Tensor] | None = None  # not state either

    def _position(self, m: torch.Tensor) -> torch.Tensor:
        """The (B, h*w, d) sine code of a memory level, computed once per size and device."""
        # inference-mode tensors must not reach autograd, so they are cached apart
        # int(): a trace sees sizes as tensors, which missed the cache and recorded the code's
        # arange, sin and cos, about 120 of the 527 operators of the default head's trace
        # (the same values; they were too small to cost measurable time:
        # benchmarks/bench_head_floor.py)
        key = (tuple(int(s) for s in m.shape[-2:]), m.dtype, m.device,
               torch.is_inference_mode_enabled())
        if key not in self._positions:
            self._positions[key] = sine_position_embedding(m[:1], self.hidden_dim).detach()
        return self._positions[key].expand(m.shape[0], -1, -1)

    def _blocked(self, m: torch.Tensor) -> torch.Tensor:
        """(B,Q,h,w) logits at a level's size -> (B, Q, h*w) bool attention mask, True where a
        query may not attend."""
        blocked = m.flatten(2) < 0  # sigmoid(m) < 0.5; (B, Q, L)
        # an empty mask would give NaN: attend everywhere (an elementwise op, not an index
        # assignment, which needs the nonzero rows: one graph for a trace or torch.compile)
        return blocked & ~blocked.all(-1, keepdim=True)

    def levels(self, memory: list[torch.Tensor]) -> tuple[list, list, list]:
        """The memory levels as the layers read them: (B,L,d) tokens with the level embedding,
        their (B,L,d) position codes, and their (h, w) sizes."""
        srcs, poss, sizes = [], [], []
        for i, m in enumerate(memory[: self.num_levels]):
            sizes.append(tuple(m.shape[-2:]))
            poss.append(self._position(m))
            # (B,L,d) row-major: a transposed view makes ``memory + memory_pos`` strided, and
            # with inference-mode weights turns the K/V projections into per-token products
            srcs.append(m.flatten(2).transpose(1, 2).contiguous() + self.level_embed.weight[i])
        return srcs, poss, sizes

    def initial_queries(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned queries and their positions, (B,Q,d) each."""
        return (self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1),
                self.query_pos.weight.unsqueeze(0).expand(batch, -1, -1))

    def first_mask_embed(self) -> torch.Tensor:
        """(1,Q,mask_dim): the mask embedding of the learned queries before any layer, the same
        for every image (it broadcasts over the batch). Without autograd (inference) it is
        computed once per weights and kept (keyed by :func:`traced_head.weights_key`, as the
        traces are), so a frozen trace holds it, and its
        projections through the mask features, as constants: 10 operators fewer per forward.
        Read out of the Q queries once instead of per image, it equals the per-image readout up
        to float rounding (tests/test_speed_paths.py)."""
        params = (self.query_feat.weight, *self.norm.parameters(), *self.mask_embed.parameters())
        # weights made in inference mode keep no version counter: nothing to key a copy by
        if torch.is_grad_enabled() or any(p.is_inference() for p in params):
            return self.mask_embed(self.norm(self.query_feat.weight))[None]
        key = (weights_key(params), torch.is_inference_mode_enabled())
        if self._first_embed is None or self._first_embed[0] != key:
            self._first_embed = (key, self.mask_embed(self.norm(self.query_feat.weight))[None])
        return self._first_embed[1]

    def forward(
        self, memory: list[torch.Tensor], mask_features: MaskFeatures | torch.Tensor,
        all_predictions: bool = True,
    ) -> list[dict[str, torch.Tensor]]:
        if isinstance(mask_features, torch.Tensor):
            mask_features = MaskFeatures(mask_features)
        srcs, poss, sizes = self.levels(memory)
        queries, query_pos = self.initial_queries(mask_features.fine.shape[0])
        feats, embeds = [], []  # the kept predictions' class features and mask embeddings
        for i, layer in enumerate(self.layers):
            level = i % self.num_levels
            attn_mask = None
            if all_predictions or self.masked_attention:
                if i == 0 and not all_predictions:  # the learned queries: the same per image
                    embed = self.first_mask_embed()
                else:
                    q = self.norm(queries)
                    embed = self.mask_embed(q)
                if all_predictions:
                    feats.append(q)
                    embeds.append(embed)
                if self.masked_attention:  # the mask alone, at the level's size
                    attn_mask = self._blocked(
                        mask_features.resized_logits(embed.detach(), sizes[level]))
            queries = layer(queries, query_pos, srcs[level], poss[level], attn_mask)
        feats.append(self.norm(queries))
        embeds.append(self.mask_embed(feats[-1]))
        # every kept prediction's stride-4 masks in one product (one pass over the features;
        # in training its backward is one product too, not one per prediction)
        embed = embeds[0] if len(embeds) == 1 else torch.cat(embeds, 1)
        masks = mask_features.logits(embed).split(queries.shape[1], 1)
        if len(masks) > 1:  # the loss reads each prediction's (B,Q,h,w) whole: contiguous
            masks = [m.contiguous() for m in masks]
        return [{"class_feat": f, "mask_embed": e, "pred_masks": m}
                for f, e, m in zip(feats, embeds, masks, strict=True)]
