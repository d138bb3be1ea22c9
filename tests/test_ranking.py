"""Ranking class enhancement loss against plain-python references."""

import math

import pytest
import torch
import torch.nn.functional as F

from celseg.losses.criterion import SetCriterion
from celseg.losses.ranking import ranking_loss


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b))


def _softmax(vals):
    m = max(vals)
    e = [math.exp(v - m) for v in vals]
    return [v / sum(e) for v in e]


def naive_listwise(embeds, scale, rows, text, tau):
    total = 0.0
    for e, y in zip(embeds, rows, strict=True):
        others = [c for c in range(len(text)) if c != y]
        r = _softmax([_cos(text[y], text[c]) / tau for c in others])
        p = _softmax([scale * _cos(e, text[c]) for c in others])
        total += sum(ri * (math.log(ri) - math.log(pi)) for ri, pi in zip(r, p, strict=True)
                     if ri > 0)
    return total / len(rows)


def naive_pairwise(embeds, rows, text, margin):
    total, count = 0.0, 0
    for e, y in zip(embeds, rows, strict=True):
        others = [c for c in range(len(text)) if c != y]
        for i in others:
            for j in others:
                if _cos(text[y], text[i]) > _cos(text[y], text[j]):
                    total += max(0.0, _cos(e, text[j]) - _cos(e, text[i]) + margin)
                    count += 1
    return total / count


def _case(seed, n=3, r=5, d=4):
    g = torch.Generator().manual_seed(seed)
    embeds = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    text = F.normalize(torch.randn(r, d, generator=g), dim=-1)
    rows = torch.randint(0, r, (n,), generator=g)
    return embeds, text, rows


@pytest.mark.parametrize("seed", range(3))
def test_listwise_matches_naive(seed):
    embeds, text, rows = _case(seed)
    got = ranking_loss(embeds, torch.tensor(7.0), rows, text, "listwise", tau=0.5)
    ref = naive_listwise(embeds.tolist(), 7.0, rows.tolist(), text.tolist(), 0.5)
    assert got.item() == pytest.approx(ref, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("seed", range(3))
def test_pairwise_matches_naive(seed):
    embeds, text, rows = _case(seed)
    got = ranking_loss(embeds, torch.tensor(7.0), rows, text, "pairwise", margin=0.2)
    ref = naive_pairwise(embeds.tolist(), rows.tolist(), text.tolist(), 0.2)
    assert got.item() == pytest.approx(ref, rel=1e-5)


def test_listwise_zero_when_proposal_follows_text_order():
    # e_q = t_y and scale = 1 / tau give p = r exactly
    _, text, rows = _case(4)
    got = ranking_loss(text[rows], torch.tensor(1 / 0.1), rows, text, "listwise", tau=0.1)
    assert got.item() == pytest.approx(0.0, abs=1e-6)
    other = F.normalize(torch.randn(len(rows), text.shape[1]), dim=-1)
    assert ranking_loss(other, torch.tensor(10.0), rows, text, "listwise", tau=0.1) > 1e-3


def test_hand_computed_pairwise_three_classes():
    # classes: y=0 (target), 1 close to y, 2 far from y; proposal prefers 2 over 1
    text = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    e = torch.tensor([[0.6, 0.8]])
    # one ordered pair (i=1, j=2): hinge = s_2 - s_1 + m = 0.8 - (0.48 + 0.48) + 0.5 = 0.34
    got = ranking_loss(e, torch.tensor(1.0), torch.tensor([0]), text, "pairwise", margin=0.5)
    assert got.item() == pytest.approx(0.34, abs=1e-6)


def test_criterion_ranks_over_given_set_with_index():
    """rank_text_emb (all names) + rank_target_index: vocabulary index -> row."""
    embeds, text, _ = _case(5, n=2, r=6)
    vocab_rows = torch.tensor([4, 1, 3])  # vocabulary of 3 seen classes within 6 names
    labels = torch.tensor([2, 0])  # vocabulary indices of the matched segments
    out = {"pred_logits": torch.zeros(1, 2, 3), "pred_masks": torch.zeros(1, 2, 2, 2),
           "class_embed": embeds[None], "logit_scale": torch.tensor(5.0),
           "text_emb": text[vocab_rows]}

    class Fixed:
        def __call__(self, outputs, targets, valid):
            return [(torch.tensor([0, 1]), torch.tensor([0, 1]))]

    crit = SetCriterion(Fixed(), {"loss_rank": 2.0}, False, aux_loss=False, ranking_tau=0.3)
    targets = [{"labels": labels, "masks": torch.ones(2, 2, 2)}]
    lv = torch.zeros(1, 2, 2, dtype=torch.long)
    got = crit(out, targets, lv, rank_text_emb=text, rank_target_index=vocab_rows)["loss_rank"]
    rows = vocab_rows[labels].tolist()
    ref = naive_listwise(embeds.tolist(), 5.0, rows, text.tolist(), 0.3)
    assert got.item() == pytest.approx(2.0 * ref, rel=1e-5)
    # default: ranked over the vocabulary given to the model
    got = crit(out, targets, lv)["loss_rank"]
    ref = naive_listwise(embeds.tolist(), 5.0, labels.tolist(), text[vocab_rows].tolist(), 0.3)
    assert got.item() == pytest.approx(2.0 * ref, rel=1e-5)
