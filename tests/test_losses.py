"""Loss terms against hand-computed / naive-loop references."""

import math

import pytest
import torch

from celseg.config import LossConfig
from celseg.losses.class_enhancement import pixel_focal_loss
from celseg.losses.criterion import SetCriterion, build_criterion
from celseg.losses.mask_terms import dice_loss, sigmoid_bce
from celseg.losses.matcher import HungarianMatcher
from celseg.losses.targets import build_vocab_lut, labels_to_targets, labels_to_vocab


def _sig(x):
    return 1 / (1 + math.exp(-x))


def _softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


class FixedMatcher:
    """Returns a given matching, so loss terms are tested without the Hungarian step."""

    def __init__(self, indices):
        self.indices = [(torch.tensor(q), torch.tensor(k)) for q, k in indices]

    def __call__(self, outputs, targets, valid):
        return self.indices


def test_mask_terms_hand_computed():
    x = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    t = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    w = torch.tensor([1.0, 1.0, 1.0, 0.0])  # last point ignored
    s = [_sig(2.0), _sig(-1.0), _sig(0.5)]
    bce = -(math.log(s[0]) + math.log(1 - s[1]) + math.log(s[2])) / 3
    dice = 1 - (2 * (s[0] + s[2]) + 1) / (sum(s) + 2 + 1)
    assert sigmoid_bce(x, t, w).item() == pytest.approx(bce, rel=1e-5)
    assert dice_loss(x, t, w).item() == pytest.approx(dice, rel=1e-5)


def test_labels_to_targets():
    labels = torch.tensor([[[0, 3, 3], [255, 5, 1]]])  # dataset ids
    lut = build_vocab_lut([3, 0, 5])  # vocab: 3 -> 0, 0 -> 1, 5 -> 2; id 1 not in vocabulary
    [t] = labels_to_targets(labels, lut)
    assert t["labels"].tolist() == [0, 1, 2]
    assert t["masks"].tolist() == [
        [[0, 1, 1], [0, 0, 0]], [[1, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 1, 0]],
    ]
    assert labels_to_vocab(labels, lut).tolist() == [[[1, 0, 0], [255, 2, 255]]]


def _outputs(logits, masks, text=None):
    out = {"pred_logits": logits, "pred_masks": masks,
           "class_embed": torch.nn.functional.normalize(torch.randn(*logits.shape[:2], 4), dim=-1),
           "logit_scale": torch.tensor(10.0)}
    out["text_emb"] = text if text is not None else torch.eye(4)[:3]
    return out


def test_class_term_baseline_no_object_weight():
    # one image, 3 queries, C=2 (+ no-object); query 1 matched to class 0
    logits = torch.tensor([[[1.0, 0.0, 0.5], [2.0, -1.0, 0.0], [0.0, 0.3, 1.0]]])
    crit = SetCriterion(FixedMatcher([([1], [0])]), {"loss_ce": 1.0}, has_background=True,
                        no_object_weight=0.1, aux_loss=False)
    targets = [{"labels": torch.tensor([0]), "masks": torch.ones(1, 2, 2)}]
    out = crit(_outputs(logits, torch.zeros(1, 3, 2, 2)), targets, torch.zeros(1, 2, 2).long())
    rows = logits[0].tolist()
    nll = [-math.log(_softmax(rows[0])[2]), -math.log(_softmax(rows[1])[0]),
           -math.log(_softmax(rows[2])[2])]
    ref = (0.1 * nll[0] + 1.0 * nll[1] + 0.1 * nll[2]) / (0.1 + 1.0 + 0.1)
    assert out["loss_ce"].item() == pytest.approx(ref, rel=1e-5)


def test_class_term_background_free_matched_only():
    logits = torch.tensor([[[1.0, 0.0], [2.0, -1.0], [0.0, 0.3]],
                           [[0.5, 0.5], [1.0, 2.0], [3.0, 0.0]]])
    crit = SetCriterion(FixedMatcher([([2], [0]), ([0, 1], [1, 0])]), {"loss_ce": 3.0},
                        has_background=False, aux_loss=False)
    targets = [{"labels": torch.tensor([1]), "masks": torch.ones(1, 2, 2)},
               {"labels": torch.tensor([0, 1]), "masks": torch.ones(2, 2, 2)}]
    out = crit(_outputs(logits, torch.zeros(2, 3, 2, 2)), targets, torch.zeros(2, 2, 2).long())
    # matched: (img0,q2)->class 1, (img1,q0)->class 1, (img1,q1)->class 0
    ref = -(math.log(_softmax([0.0, 0.3])[1]) + math.log(_softmax([0.5, 0.5])[1])
            + math.log(_softmax([1.0, 2.0])[0])) / 3
    assert out["loss_ce"].item() == pytest.approx(3.0 * ref, rel=1e-5)


def test_class_term_background_free_divided_by_num_masks():
    """Like the mask terms, the matched cross-entropy is divided by the batch's ground-truth
    segments (2 here), not by the matched pairs (1: the second segment has no query)."""
    logits = torch.tensor([[[1.0, 0.0], [2.0, -1.0]]])
    crit = SetCriterion(FixedMatcher([([1], [0])]), {"loss_ce": 1.0}, has_background=False,
                        aux_loss=False)
    targets = [{"labels": torch.tensor([0, 1]), "masks": torch.ones(2, 2, 2)}]
    out = crit(_outputs(logits, torch.zeros(1, 2, 2, 2)), targets, torch.zeros(1, 2, 2).long())
    assert out["loss_ce"].item() == pytest.approx(-math.log(_softmax([2.0, -1.0])[0]) / 2,
                                                  rel=1e-5)


def test_mask_and_dice_terms_divided_by_num_masks():
    g = torch.Generator().manual_seed(0)
    masks = torch.randn(1, 2, 3, 3, generator=g)
    tm = (torch.rand(2, 3, 3, generator=g) > 0.5).float()
    labels_vocab = torch.tensor([[[0, 1, 255], [0, 1, 1], [255, 0, 0]]])
    crit = SetCriterion(FixedMatcher([([1], [0])]), {"loss_mask": 1.0, "loss_dice": 1.0},
                        has_background=False, aux_loss=False)
    targets = [{"labels": torch.tensor([0, 1]), "masks": tm}]
    out = crit(_outputs(torch.zeros(1, 2, 2), masks), targets, labels_vocab)
    pix = [(i, j) for i in range(3) for j in range(3) if labels_vocab[0, i, j] != 255]
    s = {p: _sig(float(masks[0, 1][p])) for p in pix}
    t = {p: float(tm[0][p]) for p in pix}
    bce = -sum(t[p] * math.log(s[p]) + (1 - t[p]) * math.log(1 - s[p]) for p in pix) / len(pix)
    dice = 1 - (2 * sum(s[p] * t[p] for p in pix) + 1) / (sum(s.values()) + sum(t.values()) + 1)
    # 2 ground-truth segments in the batch, one matched
    assert out["loss_mask"].item() == pytest.approx(bce / 2, rel=1e-5)
    assert out["loss_dice"].item() == pytest.approx(dice / 2, rel=1e-5)


@pytest.mark.parametrize("has_background", [False, True])
def test_pixel_focal_loss_naive(has_background):
    g = torch.Generator().manual_seed(1)
    q_n, c_n, h, w = 3, 2, 2, 3
    logits = torch.randn(1, q_n, c_n + int(has_background), generator=g)
    masks = torch.randn(1, q_n, h, w, generator=g)
    labels = torch.tensor([[[0, 1, 255], [1, 1, 0]]])
    gamma, total, count = 2.0, 0.0, 0
    for i in range(h):
        for j in range(w):
            y = int(labels[0, i, j])
            if y == 255:
                continue
            s = [0.0] * c_n
            for q in range(q_n):
                prob = _softmax(logits[0, q].tolist())
                for c in range(c_n):
                    s[c] += prob[c] * _sig(float(masks[0, q, i, j]))
            p = s[y] / (sum(s) + 1e-6)
            total += -((1 - p) ** gamma) * math.log(p)
            count += 1
    got = pixel_focal_loss(logits, masks, labels, has_background, gamma)
    assert got.item() == pytest.approx(total / count, rel=1e-5)


def test_pixel_loss_upsamples_map_to_label_size():
    logits = torch.randn(2, 3, 4)
    masks = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 4, (2, 16, 16))
    labels[:, :3] = 255
    loss = pixel_focal_loss(logits, masks, labels, False)
    assert torch.isfinite(loss) and loss > 0
    assert pixel_focal_loss(logits, masks, torch.full_like(labels, 255), False).item() == 0.0


@pytest.mark.parametrize("has_background", [False, True])
def test_ignore_pixels_change_nothing(has_background):
    """Predictions (and target masks) under ignore pixels do not change any term."""
    g = torch.Generator().manual_seed(2)
    b, q_n, c_n, size = 2, 4, 3, 6
    logits = torch.randn(b, q_n, c_n + int(has_background), generator=g)
    masks = torch.randn(b, q_n, size, size, generator=g)
    labels = torch.randint(0, c_n, (b, size, size), generator=g)
    labels[:, 1:3, 2:5] = 255
    lut = build_vocab_lut(list(range(c_n)))
    cfg = LossConfig(pixel_weight=1.0, ranking_weight=1.0, num_points=0)  # every pixel
    crit = build_criterion(cfg, has_background)
    text = torch.nn.functional.normalize(torch.randn(c_n, 4, generator=g), dim=-1)
    out = _outputs(logits, masks, text)
    before = crit(out, labels_to_targets(labels, lut), labels_to_vocab(labels, lut))
    changed = masks.clone()
    changed[:, :, 1:3, 2:5] = 50 * torch.randn(b, q_n, 2, 3, generator=g)
    after = crit(dict(out, pred_masks=changed), labels_to_targets(labels, lut),
                 labels_to_vocab(labels, lut))
    assert set(before) == {"loss_ce", "loss_mask", "loss_dice", "loss_pixel", "loss_rank"}
    for k in before:
        assert before[k].item() == pytest.approx(after[k].item(), rel=1e-6), k


def test_weights_applied_once_aux_suffix_and_zero_weight_skipped():
    g = torch.Generator().manual_seed(3)
    logits, masks = torch.randn(1, 3, 2, generator=g), torch.randn(1, 3, 4, 4, generator=g)
    labels = torch.randint(0, 2, (1, 4, 4), generator=g)
    lut = build_vocab_lut([0, 1])
    out = _outputs(logits, masks, torch.eye(4)[:2])
    out["aux_outputs"] = [_outputs(logits * 2, masks, torch.eye(4)[:2])]
    args = (labels_to_targets(labels, lut), labels_to_vocab(labels, lut))
    one = SetCriterion(HungarianMatcher(), {"loss_ce": 1.0, "loss_dice": 1.0}, False)(out, *args)
    two = SetCriterion(HungarianMatcher(), {"loss_ce": 2.0, "loss_dice": 0.5}, False)(out, *args)
    assert set(one) == {"loss_ce", "loss_dice", "loss_ce_aux0", "loss_dice_aux0"}
    for k in one:
        factor = 2.0 if k.startswith("loss_ce") else 0.5
        assert two[k].item() == pytest.approx(factor * one[k].item(), rel=1e-6)
    no_aux = SetCriterion(HungarianMatcher(), {"loss_ce": 1.0}, False, aux_loss=False)
    assert set(no_aux(out, *args)) == {"loss_ce"}
