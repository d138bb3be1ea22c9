"""Hungarian matcher against brute force over every assignment, with naive-loop costs."""

import itertools
import math

import pytest
import torch

from celseg.losses.mask_terms import dice_loss, sigmoid_bce
from celseg.losses.matcher import HungarianMatcher


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def naive_cost(logits, masks, labels, tmasks, valid, wc, wm, wd):
    """Plain-python cost(q, k) over labelled pixels (same resolution)."""
    q_n, k_n = logits.shape[0], labels.shape[0]
    pix = [(i, j) for i in range(valid.shape[0]) for j in range(valid.shape[1]) if valid[i, j]]
    cost = [[0.0] * k_n for _ in range(q_n)]
    for q in range(q_n):
        row = [math.exp(v) for v in logits[q].tolist()]
        prob = [v / sum(row) for v in row]
        for k in range(k_n):
            bce, inter, ps, ts = 0.0, 0.0, 0.0, 0.0
            for i, j in pix:
                x, t = float(masks[q, i, j]), float(tmasks[k, i, j])
                s = _sig(x)
                bce += -(t * math.log(s) + (1 - t) * math.log(1 - s))
                inter += s * t
                ps += s
                ts += t
            bce /= max(len(pix), 1)
            dice = 1 - (2 * inter + 1) / (ps + ts + 1)
            cost[q][k] = -wc * prob[int(labels[k])] + wm * bce + wd * dice
    return cost


def brute_force(cost, q_n, k_n):
    n = min(q_n, k_n)
    best = math.inf
    if k_n <= q_n:
        for perm in itertools.permutations(range(q_n), k_n):
            best = min(best, sum(cost[perm[k]][k] for k in range(k_n)))
    else:
        for perm in itertools.permutations(range(k_n), n):
            best = min(best, sum(cost[q][perm[q]] for q in range(q_n)))
    return best


def _case(seed, q_n, k_n, cols, size=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(q_n, cols, generator=g) * 2
    masks = torch.randn(q_n, size, size, generator=g) * 3
    ids = torch.randint(0, k_n, (size, size), generator=g)
    ids[0, 0:k_n] = torch.arange(k_n)  # every segment present
    valid = torch.rand(size, size, generator=g) > 0.25
    valid[0, 0:k_n] = True
    labels = torch.randperm(cols - 1, generator=g)[:k_n]
    tmasks = torch.stack([(ids == k).float() for k in range(k_n)])
    return logits, masks, labels, tmasks, valid


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k_n", [1, 2, 3])
def test_matcher_matches_brute_force(seed, k_n):
    q_n, cols = 4, 5
    logits, masks, labels, tmasks, valid = _case(seed * 10 + k_n, q_n, k_n, cols)
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0)
    outputs = {"pred_logits": logits[None], "pred_masks": masks[None]}
    [(rows, cols_)] = matcher(outputs, [{"labels": labels, "masks": tmasks}], valid[None])
    cost = naive_cost(logits, masks, labels, tmasks, valid, 2.0, 5.0, 5.0)
    assert len(rows) == k_n and len(set(rows.tolist())) == k_n
    got = sum(cost[q][k] for q, k in zip(rows.tolist(), cols_.tolist(), strict=True))
    assert got == pytest.approx(brute_force(cost, q_n, k_n), abs=1e-5)


def test_cost_matrix_equals_naive_and_more_targets_than_queries():
    logits, masks, labels, tmasks, valid = _case(7, 2, 3, 5)
    matcher = HungarianMatcher(1.0, 2.0, 3.0)
    cost = matcher.cost_matrix(logits, masks, {"labels": labels, "masks": tmasks}, valid)
    ref = naive_cost(logits, masks, labels, tmasks, valid, 1.0, 2.0, 3.0)
    assert torch.allclose(cost, torch.tensor(ref), atol=1e-5)
    outputs = {"pred_logits": logits[None], "pred_masks": masks[None]}
    [(rows, cols_)] = matcher(outputs, [{"labels": labels, "masks": tmasks}], valid[None])
    got = sum(ref[q][k] for q, k in zip(rows.tolist(), cols_.tolist(), strict=True))
    assert len(rows) == 2 and got == pytest.approx(brute_force(ref, 2, 3), abs=1e-5)


def test_ignore_pixels_do_not_change_costs():
    logits, masks, labels, tmasks, valid = _case(3, 4, 2, 4)
    matcher = HungarianMatcher()
    target = {"labels": labels, "masks": tmasks}
    before = matcher.cost_matrix(logits, masks, target, valid)
    changed = masks.clone()
    changed[:, ~valid] = torch.randn(int((~valid).sum())) * 10
    tchanged = tmasks.clone()
    tchanged[:, ~valid] = 1.0
    after = matcher.cost_matrix(logits, changed, {"labels": labels, "masks": tchanged}, valid)
    assert torch.allclose(before, after, atol=1e-6)


def test_pairwise_diagonal_equals_paired_form():
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(3, 20, generator=g), (torch.rand(3, 20, generator=g) > 0.5).float()
    w = (torch.rand(20, generator=g) > 0.3).float()
    for fn in (sigmoid_bce, dice_loss):
        assert torch.allclose(fn(x, t, w, pairwise=True).diagonal(), fn(x, t, w), atol=1e-6)


def test_empty_targets_and_point_sampling():
    matcher = HungarianMatcher(num_points=50)
    logits, masks, labels, tmasks, valid = _case(1, 4, 2, 4, size=8)
    outputs = {"pred_logits": torch.stack([logits, logits]),
               "pred_masks": torch.stack([masks, masks])}
    empty = {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 8, 8)}
    targets = [{"labels": labels, "masks": tmasks}, empty]
    res = matcher(outputs, targets, valid[None].repeat(2, 1, 1))
    assert len(res[0][0]) == 2 and len(res[1][0]) == 0
