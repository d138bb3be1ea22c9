"""Ranking class enhancement loss.

For a matched query q with unit class embedding e_q and true class y, over a ranked set of
classes with unit text embeddings t_c (the training vocabulary, or every class name including
unseen ones in the transductive setting), and for c != y:

    s_qc = cos(e_q, t_c),  z_qc = scale * s_qc
    r_c  = softmax_{c != y}( cos(t_y, t_c) / tau )       target order from text similarity
    p_c  = softmax_{c != y}( z_qc )                       the proposal's own order

listwise (default):  L = mean_q KL(r || p) = mean_q sum_{c != y} r_c (log r_c - log p_c)
pairwise:            L = mean over (q, i, j) with r_i > r_j of max(0, s_qj - s_qi + margin)

In the pairwise variant the order r_i > r_j is read from cos(t_y, t_i) > cos(t_y, t_j), which
is the same order (softmax is monotone) without the ties that underflow would create.

The target order may also come from the VLM's image-text space (``target_sims``): with v_q the
VLM's mask-pooled image embedding of the proposal (``celseg.losses.distill.pooled_targets``),
cos(v_q, t_c) replaces cos(t_y, t_c) above, so the proposal ranks the other classes as the VLM
sees its region. :func:`ranking_terms` gives the loss for a ``target`` of ``text``, ``image`` or
``both`` (the mean of the two losses).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ranking_loss(
    class_embed: torch.Tensor,
    logit_scale: torch.Tensor,
    target_rows: torch.Tensor,
    rank_text_emb: torch.Tensor,
    kind: str = "listwise",
    tau: float = 0.05,
    margin: float = 0.1,
    target_sims: torch.Tensor | None = None,
) -> torch.Tensor:
    """class_embed (N,D) unit query embeddings of matched queries; logit_scale ();
    target_rows (N,) long row of each query's true class in rank_text_emb (R,D) unit;
    target_sims (N,R) the similarities that set the target order (default cos(t_y, t_c))
    -> () loss.
    """
    n, r = class_embed.shape[0], rank_text_emb.shape[0]
    if n == 0 or r < 2:
        return class_embed.sum() * 0.0
    text = rank_text_emb.to(class_embed.dtype)
    sims = class_embed @ text.T  # (N,R) s_qc
    text_sims = text[target_rows] @ text.T if target_sims is None \
        else target_sims.to(sims)  # (N,R) cos(t_y, t_c), or the given order
    # drop the true class, order of the rest kept (a gather: no data-dependent shape)
    others = torch.arange(r - 1, device=sims.device).expand(n, -1)
    others = others + (others >= target_rows.to(sims.device)[:, None]).long()
    sims, text_sims = sims.gather(1, others), text_sims.gather(1, others)
    if kind == "listwise":
        target = (text_sims / tau).softmax(-1)
        log_p = (logit_scale * sims).log_softmax(-1)
        kl = torch.xlogy(target, target) - target * log_p
        return kl.sum(-1).mean()
    if kind == "pairwise":
        ordered = text_sims[:, :, None] > text_sims[:, None, :]  # (N, i, j): r_i > r_j
        hinge = F.relu(sims[:, None, :] - sims[:, :, None] + margin)  # s_qj - s_qi + margin
        return (hinge * ordered).sum() / ordered.sum().clamp_min(1)
    raise ValueError(f"ranking kind '{kind}' is not 'listwise' or 'pairwise'")


TARGETS = ("text", "image", "both")


def ranking_terms(
    class_embed: torch.Tensor,
    logit_scale: torch.Tensor,
    target_rows: torch.Tensor,
    rank_text_emb: torch.Tensor,
    image_embed: torch.Tensor | None = None,
    target: str = "text",
    kind: str = "listwise",
    tau: float = 0.05,
    margin: float = 0.1,
) -> torch.Tensor:
    """:func:`ranking_loss` with the target order of ``target`` (module docstring):
    image_embed (N,D) unit VLM embeddings of the queries' regions, needed by ``image`` and
    ``both``."""
    if target not in TARGETS:
        raise ValueError(f"ranking target {target!r}; expected one of {', '.join(TARGETS)}")
    losses = []
    if target in ("text", "both"):
        losses.append(ranking_loss(class_embed, logit_scale, target_rows, rank_text_emb, kind,
                                   tau, margin))
    if target in ("image", "both"):
        if image_embed is None:
            raise ValueError(f"ranking target {target!r} needs the VLM's image embeddings")
        sims = image_embed.to(rank_text_emb) @ rank_text_emb.T  # (N,R) cos(v_q, t_c)
        losses.append(ranking_loss(class_embed, logit_scale, target_rows, rank_text_emb, kind,
                                   tau, margin, target_sims=sims))
    return sum(losses) / len(losses)
