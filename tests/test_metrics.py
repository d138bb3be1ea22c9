"""Metrics against a naive per-pixel Python reference on random inputs."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from celseg.data.classes import ClassInfo
from celseg.evaluation.metrics import ConfusionMatrix, format_table, harmonic_mean, summarize


def make_info(n: int, unseen: set[int]) -> ClassInfo:
    return ClassInfo(
        names=tuple(f"class {i}" for i in range(n)),
        splits=tuple("unseen" if i in unseen else "seen" for i in range(n)),
        kinds=("thing",) * n,
        colors=((0, 0, 0),) * n,
    )


def naive_scores(preds, targets, n, ignore, unseen):
    """Per-pixel loops: IoU per class over the whole set, absent classes excluded."""
    inter = [0] * n
    gt = [0] * n
    pr = [0] * n
    for p_img, t_img in zip(preds, targets, strict=True):
        for p, t in zip(p_img, t_img, strict=True):
            if t == ignore:
                continue
            gt[t] += 1
            pr[p] += 1
            if p == t:
                inter[t] += 1
    ious = {}
    for c in range(n):
        if gt[c] == 0:
            continue
        ious[c] = 100.0 * inter[c] / (gt[c] + pr[c] - inter[c])
    seen = [v for c, v in ious.items() if c not in unseen]
    uns = [v for c, v in ious.items() if c in unseen]
    s = sum(seen) / len(seen) if seen else float("nan")
    u = sum(uns) / len(uns) if uns else float("nan")
    return ious, s, u


@st.composite
def segmentation_case(draw):
    n = draw(st.integers(2, 6))
    n_img = draw(st.integers(1, 3))
    size = draw(st.integers(1, 30))
    unseen = set(draw(st.lists(st.integers(0, n - 1), max_size=n, unique=True)))
    # targets may use only a subset of classes (absent classes) and the ignore id
    allowed = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    targets = [draw(st.lists(st.sampled_from(allowed + [255]), min_size=size, max_size=size))
               for _ in range(n_img)]
    preds = [draw(st.lists(st.integers(0, n - 1), min_size=size, max_size=size))
             for _ in range(n_img)]
    return n, unseen, preds, targets


def close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) < 1e-9


@settings(max_examples=150, deadline=None)
@given(segmentation_case())
def test_matches_naive_reference(case):
    n, unseen, preds, targets = case
    cm = ConfusionMatrix(n, ignore_index=255)
    for p, t in zip(preds, targets, strict=True):
        cm.update(torch.tensor(p), torch.tensor(t))
    summary = summarize(cm.matrix, make_info(n, unseen))
    ious, s, u = naive_scores(preds, targets, n, 255, unseen)
    for c in range(n):
        got = summary["per_class"][f"class {c}"]["iou"]
        if c in ious:
            assert close(got, ious[c])
        else:
            assert math.isnan(got), "absent class must be NaN"
    assert close(summary["miou_seen"], s)
    assert close(summary["miou_unseen"], u)
    expected_h = float("nan") if math.isnan(s) or math.isnan(u) else (
        0.0 if s + u == 0 else 2 * s * u / (s + u))
    assert close(summary["hiou"], expected_h)


def test_hand_computed_case():
    # gt:   0 0 1 1 255 2      pred: 0 1 1 1 2 0
    # class 0: tp 1, gt 2, pred 2 -> 1/3; class 1: tp 2, gt 2, pred 3 -> 2/3;
    # class 2: tp 0, gt 1, pred 0 (ignored pixel not counted) -> 0
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([0, 1, 1, 1, 2, 0]), torch.tensor([0, 0, 1, 1, 255, 2]))
    s = summarize(cm.matrix, make_info(4, unseen={2, 3}))
    assert s["per_class"]["class 0"]["iou"] == pytest.approx(100 / 3)
    assert s["per_class"]["class 1"]["iou"] == pytest.approx(200 / 3)
    assert s["per_class"]["class 2"]["iou"] == 0.0
    assert math.isnan(s["per_class"]["class 3"]["iou"])  # absent
    assert s["miou_seen"] == pytest.approx(50.0)
    assert s["miou_unseen"] == 0.0
    assert s["hiou"] == 0.0
    assert s["pixel_acc"] == pytest.approx(100 * 3 / 5)
    table = format_table(s)
    assert "class 2*" in table and "n/a" in table


def test_merge_equals_single_stream():
    g = torch.Generator().manual_seed(0)
    p = torch.randint(0, 5, (4, 8, 8), generator=g)
    t = torch.randint(0, 5, (4, 8, 8), generator=g)
    whole, a, b = ConfusionMatrix(5), ConfusionMatrix(5), ConfusionMatrix(5)
    whole.update(p, t)
    a.update(p[:2], t[:2])
    b.update(p[2:], t[2:])
    a.merge(b)
    assert torch.equal(a.matrix, whole.matrix)
    assert whole.matrix.sum() == 4 * 8 * 8


def test_bad_inputs_name_the_value():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="7"):
        cm.update(torch.tensor([7]), torch.tensor([1]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.tensor([1, 2]), torch.tensor([1]))


def test_harmonic_mean_edges():
    assert harmonic_mean(50.0, 50.0) == 50.0
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert math.isnan(harmonic_mean(float("nan"), 10.0))
    assert harmonic_mean(80.0, 20.0) == pytest.approx(32.0)
