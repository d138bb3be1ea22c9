"""semantic_probs, semantic_map and the labels against naive loops and hand-made cases."""

import math

import pytest
import torch

from celseg.models.inference import (
    labels_from_probs,
    scores_to_labels,
    semantic_map,
    semantic_probs,
)


def _sig(x):
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize("has_background", [False, True])
def test_semantic_probs_naive(has_background):
    g = torch.Generator().manual_seed(0)
    b, q_n, c_n, h, w = 2, 3, 4, 2, 3
    logits = torch.randn(b, q_n, c_n + int(has_background), generator=g)
    masks = torch.randn(b, q_n, h, w, generator=g)
    got = semantic_probs(logits, masks, has_background)
    assert got.shape == (b, c_n, h, w)
    for i in range(b):
        for c in range(c_n):
            for y in range(h):
                for x in range(w):
                    ref = 0.0
                    for q in range(q_n):
                        e = [math.exp(v) for v in logits[i, q].tolist()]
                        ref += e[c] / sum(e) * _sig(float(masks[i, q, y, x]))
                    assert got[i, c, y, x].item() == pytest.approx(ref, rel=1e-5)


def _outputs(probs_per_query, masks, text_n):
    return {"pred_logits": torch.log(torch.tensor(probs_per_query))[None],
            "pred_masks": torch.tensor(masks)[None], "text_emb": torch.zeros(text_n, 4)}


def test_semantic_map_resizes_and_drops_background():
    # 2 queries, 2 classes + no-object; query 0 covers left column, query 1 the right one
    out = _outputs([[0.6, 0.1, 0.3], [0.1, 0.2, 0.7]], [[[9.0, -9.0]], [[-9.0, 9.0]]], 2)
    pred = semantic_map(out, (4, 8))
    assert pred.shape == (1, 4, 8)
    assert pred[0, :, 0].tolist() == [0] * 4  # class 0 on the left
    # right: no-object (0.7) dropped, class 1 (0.2) beats class 0 (0.1)
    assert pred[0, :, -1].tolist() == [1] * 4


def test_background_free_inferred_from_text_emb():
    out = _outputs([[0.3, 0.7]], [[[5.0]]], 2)
    assert semantic_map(out, (1, 1)).item() == 1  # two classes, no background column
    assert semantic_map(out, (1, 1), has_background=True).item() == 0


def test_seen_calibration_flips_close_calls():
    # normalised probabilities 0.55 (seen class 0) vs 0.45 (unseen class 1)
    out = _outputs([[0.55, 0.45]], [[[20.0]]], 2)
    assert semantic_map(out, (1, 1), seen_positions=[0]).item() == 0
    assert semantic_map(out, (1, 1), seen_positions=[0], calibration=0.05).item() == 0
    assert semantic_map(out, (1, 1), seen_positions=[0], calibration=0.2).item() == 1
    assert semantic_map(out, (1, 1), seen_positions=torch.tensor([1]), calibration=0.2).item() == 0


def _naive_labels(scores, out_h, out_w, seen, calibration):
    """Per output pixel: the bilinear taps of align_corners=False (source (i + 0.5) * in / out
    - 0.5, clamped to the map), the blend of each class, S / sum S, seen classes minus
    ``calibration``, and the first class of highest value."""
    _, c_n, h, w = scores.shape

    def taps(i, n_in, n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        return i0, min(i0 + 1, n_in - 1), src - i0

    out = []
    for s in scores.tolist():
        rows = []
        for y in range(out_h):
            y0, y1, wy = taps(y, h, out_h)
            row = []
            for x in range(out_w):
                x0, x1, wx = taps(x, w, out_w)
                blend = [(1 - wy) * ((1 - wx) * s[c][y0][x0] + wx * s[c][y0][x1])
                         + wy * ((1 - wx) * s[c][y1][x0] + wx * s[c][y1][x1])
                         for c in range(c_n)]
                total = max(sum(blend), 1e-6)
                probs = [v / total - (calibration if c in seen else 0.0)
                         for c, v in enumerate(blend)]
                row.append(probs.index(max(probs)))
            rows.append(row)
        out.append(rows)
    return out


@pytest.mark.parametrize("shape,size", [((2, 4, 3, 5), (7, 11)), ((1, 5, 4, 4), (16, 16)),
                                        ((2, 3, 4, 6), (4, 6)), ((1, 4, 6, 5), (3, 2))])
@pytest.mark.parametrize("calibration", [0.0, 0.1])
def test_labels_against_a_per_pixel_loop(shape, size, calibration):
    """scores_to_labels (up, at integer and other factors, the same size, down) against a
    naive loop; a zero corner exercises the clamp of the normalisation."""
    g = torch.Generator().manual_seed(sum(shape))
    scores = torch.rand(*shape, generator=g) ** 2
    scores[:, :, 0, 0] = 0
    got = scores_to_labels(scores, size, [0, 2], calibration)
    assert got.dtype == torch.long
    assert got.tolist() == _naive_labels(scores, *size, [0, 2], calibration)


def test_ties_go_to_the_first_class():
    """In either memory layout (the scores are held with the classes innermost)."""
    probs = torch.tensor([[0.2, 0.4, 0.4], [0.5, 0.1, 0.5]]).T.reshape(1, 3, 1, 2)
    for layout in (torch.contiguous_format, torch.channels_last):
        assert labels_from_probs(probs.clone(memory_format=layout)).tolist() == [[[1, 0]]]
        calibrated = labels_from_probs(probs.clone(memory_format=layout), [0], 0.05)
        assert calibrated.tolist() == [[[1, 2]]]
