"""Ranking class enhancement loss against plain-python references."""

import math

import pytest
import torch
import torch.nn.functional as F

from celseg.losses.criterion import SetCriterion
from celseg.losses.ranking import ranking_loss, ranking_terms


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


def test_image_target_hand_computed_pairwise():
    # the VLM sees the region closer to class 2 than to class 1, against the text order
    text = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    e = torch.tensor([[0.6, 0.8]])
    image = torch.tensor([[0.0, 1.0]])  # cos with t1 = 0.6, with t2 = 1.0: order 2 > 1
    # one ordered pair (i=2, j=1): hinge = s_1 - s_2 + m = 0.96 - 0.8 + 0.5 = 0.66
    got = ranking_terms(e, torch.tensor(1.0), torch.tensor([0]), text, image, "image",
                        "pairwise", margin=0.5)
    assert got.item() == pytest.approx(0.66, abs=1e-6)
    # both: the mean of the text-order loss (0.34, above) and the image-order loss
    got = ranking_terms(e, torch.tensor(1.0), torch.tensor([0]), text, image, "both",
                        "pairwise", margin=0.5)
    assert got.item() == pytest.approx((0.34 + 0.66) / 2, abs=1e-6)


def naive_listwise_image(embeds, scale, rows, text, images, tau):
    total = 0.0
    for e, y, v in zip(embeds, rows, images, strict=True):
        others = [c for c in range(len(text)) if c != y]
        r = _softmax([_cos(v, text[c]) / tau for c in others])
        p = _softmax([scale * _cos(e, text[c]) for c in others])
        total += sum(ri * (math.log(ri) - math.log(pi)) for ri, pi in zip(r, p, strict=True))
    return total / len(rows)


@pytest.mark.parametrize("seed", range(3))
def test_image_target_listwise_matches_naive(seed):
    embeds, text, rows = _case(seed)
    images = F.normalize(torch.randn(len(rows), text.shape[1]), dim=-1)
    got = ranking_terms(embeds, torch.tensor(4.0), rows, text, images, "image", tau=0.4)
    ref = naive_listwise_image(embeds.tolist(), 4.0, rows.tolist(), text.tolist(),
                               images.tolist(), 0.4)
    assert got.item() == pytest.approx(ref, rel=1e-5)
    assert ranking_terms(embeds, torch.tensor(4.0), rows, text, None, "text", tau=0.4).item() \
        == pytest.approx(naive_listwise(embeds.tolist(), 4.0, rows.tolist(), text.tolist(), 0.4),
                         rel=1e-5)


def test_criterion_image_target_pools_matched_region():
    """The criterion's image target is the VLM's binary mask-pooled embedding of the matched
    query's mask."""
    text = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    dense = torch.zeros(1, 2, 2, 2)
    dense[0, 1] = 1.0  # every pixel (0, 1): the region is class 2 to the VLM
    masks = torch.full((1, 1, 2, 2), 5.0)
    out = {"pred_logits": torch.zeros(1, 1, 3), "pred_masks": masks,
           "class_embed": torch.tensor([[[0.6, 0.8]]]), "logit_scale": torch.tensor(1.0),
           "text_emb": text, "vlm_dense": dense}

    class Fixed:
        def __call__(self, outputs, targets, valid):
            return [(torch.tensor([0]), torch.tensor([0]))]

    crit = SetCriterion(Fixed(), {"loss_rank": 1.0}, False, aux_loss=False,
                        ranking_kind="pairwise", ranking_margin=0.5, ranking_target="image")
    assert crit.needs_vlm_dense
    targets = [{"labels": torch.tensor([0]), "masks": torch.ones(1, 2, 2)}]
    got = crit(out, targets, torch.zeros(1, 2, 2, dtype=torch.long))["loss_rank"]
    assert got.item() == pytest.approx(0.66, abs=1e-6)
