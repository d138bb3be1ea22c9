"""The point-sampled training losses against their plain references.

- the point-sampled, batched matcher gives the full-resolution assignment on an unambiguous case,
  and its batched costs equal a per-image loop;
- importance sampling takes its share of points where the prediction is uncertain;
- the point-sampled pixel loss is an unbiased estimate of the every-pixel loss, and equals the
  scores read at its points.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from celseg.losses.class_enhancement import pixel_focal_loss
from celseg.losses.mask_terms import importance_coords, points_for, read_nearest
from celseg.losses.matcher import (
    HungarianMatcher,
    group_by_pixel,
    label_map_of,
    pad_labels,
    segments_at,
)
from celseg.losses.targets import build_vocab_lut, labels_to_targets
from celseg.models import inference


def _planted_case(size=128, k=5, queries=12, seed=0):
    """Targets: k disjoint rectangles; query perm[j] predicts target j (+6 inside, -6 outside,
    at stride 4, plus noise) and its class; the other queries predict nothing."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.full((size, size), 255, dtype=torch.long)
    step = size // k
    for j in range(k):
        labels[10:size - 10, j * step + 2:(j + 1) * step - 2] = j
    target = labels_to_targets(labels[None], build_vocab_lut(list(range(k))))[0]
    perm = torch.randperm(queries, generator=g)[:k]
    low = F.interpolate(target["masks"][None], size=(size // 4, size // 4), mode="area")[0]
    masks = torch.full((queries, size // 4, size // 4), -6.0)
    logits = torch.zeros(queries, k)
    for j in range(k):
        masks[perm[j]] = 12 * low[j] - 6
        logits[perm[j], j] = 5.0
    masks = masks + 0.5 * torch.randn(masks.shape, generator=g)
    return masks, logits, target, labels != 255, perm


def test_point_matcher_gives_the_full_resolution_assignment():
    masks, logits, target, valid, perm = _planted_case()
    outputs = {"pred_logits": logits[None], "pred_masks": masks[None]}
    results = []
    for num_points in (0, 12544, 256):
        torch.manual_seed(1)
        [(rows, cols)] = HungarianMatcher(num_points=num_points)(outputs, [target], valid[None])
        results.append(dict(zip(cols.tolist(), rows.tolist(), strict=True)))
    planted = {j: int(q) for j, q in enumerate(perm)}
    assert results[0] == planted  # the case is unambiguous at full resolution
    assert results[1] == planted and results[2] == planted


def test_batched_costs_equal_a_per_image_loop():
    g = torch.Generator().manual_seed(4)
    b, q, c, h = 3, 6, 5, 8
    targets = []
    for n in (2, 4, 1):
        ids = torch.randint(0, n, (4 * h, 4 * h), generator=g)
        ids[0, :n] = torch.arange(n)
        targets.append(labels_to_targets(ids[None], build_vocab_lut(list(range(c))))[0])
    logits = torch.randn(b, q, c, generator=g)
    masks = torch.randn(b, q, h, h, generator=g)
    valid = torch.rand(b, 4 * h, 4 * h, generator=g) > 0.2
    matcher = HungarianMatcher(1.0, 2.0, 3.0, num_points=40)
    labels = pad_labels(targets, torch.device("cpu"))
    torch.manual_seed(0)
    pred, tgt, w = matcher.points(masks, labels, label_map_of(targets, valid, 255))
    batched = matcher.batch_costs(logits, pred, labels, tgt, w)
    for i, t in enumerate(targets):
        k = t["labels"].numel()
        one = matcher.batch_costs(logits[i:i + 1], pred[i:i + 1], labels[i:i + 1, :k],
                                  tgt[i:i + 1, :k], w[i:i + 1])[0]
        assert torch.allclose(batched[i, :, :k], one, atol=1e-6)


def test_grouping_points_by_pixel_by_hand():
    maps = torch.tensor([[[10.0, 11.0, 12.0, 13.0]]])  # (B=1, Q=1, hw=4)
    pixels = torch.tensor([[2, 0, 2, 3]])
    tgt = torch.tensor([[[1.0, 0.0, 0.0, 1.0]]])  # (B, K=1, P)
    weights = torch.tensor([[[1.0, 1.0, 0.5, 1.0]]])  # the second read of pixel 2 half-weighted
    read, grouped_tgt, grouped_w = group_by_pixel(maps, pixels, tgt, weights)
    assert read.tolist() == [[[10.0, 12.0, 13.0]]]  # pixels 0, 2, 3
    assert grouped_w.tolist() == [[[1.0, 1.5, 1.0]]]
    torch.testing.assert_close(grouped_tgt, torch.tensor([[[0.0, 1 / 1.5, 1.0]]]))


def test_costs_of_points_grouped_by_pixel_equal_the_costs_of_every_point():
    """The matcher reads each distinct pixel once (``group_by_pixel``); the reference reads
    every point (many of which share a pixel: 200 points on 16 x 16 pixels)."""
    g = torch.Generator().manual_seed(2)
    b, q, c, h = 3, 6, 5, 16
    logits, masks = torch.randn(b, q, c, generator=g), 3 * torch.randn(b, q, h, h, generator=g)
    label_map = torch.randint(0, 4, (b, 4 * h, 4 * h), generator=g)
    label_map[torch.rand(label_map.shape, generator=g) < 0.2] = 255
    labels = torch.tensor([[0, 1, 2, 3], [3, 1, -1, -1], [2, -1, -1, -1]])
    matcher = HungarianMatcher(1.0, 2.0, 3.0, num_points=200)
    torch.manual_seed(0)
    grouped = matcher.batch_costs(logits, *_grouped(matcher, masks, labels, label_map))
    torch.manual_seed(0)
    coords = torch.rand(b, 200, 2)  # the draw of matcher.points
    tgt, w = segments_at(read_nearest(label_map[:, None], coords)[:, 0], labels, 255)
    every = matcher.batch_costs(logits, read_nearest(masks, coords), labels, tgt, w)
    torch.testing.assert_close(grouped, every, atol=1e-5, rtol=1e-5)


def _grouped(matcher, masks, labels, label_map):
    pred, tgt, w = matcher.points(masks, labels, label_map)
    assert pred.shape[-1] < 200 and w.sum(-1).max() <= 200  # fewer pixels than points
    return pred, labels, tgt, w


def test_points_never_exceed_the_mask_pixels():
    assert points_for(12544, (32, 32)) == 1024
    assert points_for(12544, (128, 128)) == 12544
    assert points_for(0, (32, 32)) == 0


def test_importance_sampling_takes_its_share_where_uncertain():
    torch.manual_seed(0)
    logits = torch.full((3, 32, 32), 20.0)
    logits[:, :, 12:16] = 0.0  # the uncertain band: x in [12/32, 16/32)
    coords = importance_coords(logits, 400, oversample=3.0, importance=0.75)
    assert coords.shape == (3, 400, 2)
    in_band = ((coords[..., 0] >= 12 / 32) & (coords[..., 0] < 16 / 32)).float().mean(1)
    # 75 % chosen from the band (the band holds 1/8 of the 1,200 candidates, 150 < 300, so all
    # of its candidates are taken) plus 1/8 of the 100 uniform points
    expected = (150 * 3 / 3 + 100 / 8) / 400
    assert torch.all((in_band - expected).abs() < 0.08)


def test_point_pixel_loss_is_an_unbiased_estimate():
    g = torch.Generator().manual_seed(5)
    logits, masks = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    labels = torch.randint(0, 3, (2, 32, 32), generator=g)
    labels[:, :5] = 255
    full = pixel_focal_loss(logits, masks, labels, False).item()
    torch.manual_seed(0)
    draws = torch.tensor([pixel_focal_loss(logits, masks, labels, False, num_points=64).item()
                          for _ in range(400)])
    assert abs(draws.mean().item() - full) < 4 * draws.std().item() / math.sqrt(400)
    assert draws.std().item() > 0  # the points are random


@pytest.mark.parametrize("has_background", [False, True])
def test_point_pixel_loss_reads_the_scores_at_its_points(has_background):
    """Reading the Q sigmoid masks at the points and aggregating them equals reading the
    aggregated (B,C,h,w) scores there (bilinear reading is linear), gradients included; the
    reference reads the scores, with the same points (the same random draws)."""
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 4, 6 + has_background, generator=g, requires_grad=True)
    masks = torch.randn(2, 4, 8, 8, generator=g, requires_grad=True)
    labels = torch.randint(0, 6, (2, 32, 32), generator=g)
    labels[:, :3] = 255
    torch.manual_seed(3)
    got = pixel_focal_loss(logits, masks, labels, has_background, num_points=50)
    torch.manual_seed(3)
    coords = torch.rand(2, 50, 2)  # the draw uniform_coords makes
    scores = F.grid_sample(inference.semantic_probs(logits, masks, has_background),
                           (coords * 2 - 1)[:, None], mode="bilinear", align_corners=False)[:, :, 0]
    ix = (coords[..., 0] * 32).long().clamp(0, 31)
    iy = (coords[..., 1] * 32).long().clamp(0, 31)
    at = torch.stack([labels[b, iy[b], ix[b]] for b in range(2)])  # (B,P) nearest labels
    probs = scores / (scores.sum(1, keepdim=True) + 1e-6)
    valid = at != 255
    p_true = probs.gather(1, torch.where(valid, at, 0)[:, None])[:, 0]
    focal = -((1 - p_true) ** 2) * p_true.clamp_min(1e-6).log()
    want = focal[valid].mean()
    torch.testing.assert_close(got, want)
    for a, b in zip(torch.autograd.grad(got, [logits, masks]),
                    torch.autograd.grad(want, [logits, masks]), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_point_mask_terms_read_each_pairs_own_image_by_hand(monkeypatch):
    """The mask terms at points: pair i's target at a point is "the label at the nearest pixel
    of its own image equals its class", ignore pixels weigh 0; against a loop by hand, with the
    points fixed (importance sampling replaced by given coordinates)."""
    from celseg.losses import criterion as criterion_module
    from celseg.losses.criterion import SetCriterion

    g = torch.Generator().manual_seed(8)
    labels = torch.randint(0, 4, (3, 20, 24), generator=g)
    labels[1, :4] = 255
    masks = torch.randn(3, 5, 5, 6, generator=g)
    pairs = (torch.tensor([0, 1, 1, 2]), torch.tensor([4, 0, 2, 1]), torch.tensor([0, 1, 0, 0]))
    classes = torch.tensor([2, 0, 3, 1])
    coords = torch.rand(4, 30, 2, generator=g)
    monkeypatch.setattr(criterion_module, "importance_coords", lambda src, count, *a: coords)
    crit = SetCriterion(HungarianMatcher(num_points=30), {"loss_mask": 1.0, "loss_dice": 1.0},
                        has_background=False, num_points=30)
    bce, dice = crit.mask_terms(masks, [], pairs, classes, labels, num_masks=2)
    want_bce = want_dice = 0.0
    for i in range(4):
        b, q = int(pairs[0][i]), int(pairs[1][i])
        pred = F.grid_sample(masks[b, q][None, None], (coords[i] * 2 - 1)[None, None],
                             mode="bilinear", align_corners=False)[0, 0, 0]
        at = torch.tensor([int(labels[b, min(int(y * 20), 19), min(int(x * 24), 23)])
                           for x, y in coords[i].tolist()])
        tgt, w = (at == classes[i]).float(), (at != 255).float()
        want_bce += (w * F.binary_cross_entropy_with_logits(pred, tgt, reduction="none")).sum() \
            / w.sum().clamp_min(1)
        s = pred.sigmoid()
        want_dice += 1 - (2 * (w * s * tgt).sum() + 1) / ((w * s).sum() + (w * tgt).sum() + 1)
    torch.testing.assert_close(bce, want_bce / 2)
    torch.testing.assert_close(dice, want_dice / 2)
