"""Overlay pictures: colours against hand-computed values, legend and sheet sizes."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from celseg.data.classes import load_classes
from celseg.viz.overlay import colorize, contact_sheet, legend_image, overlay, panel

PAL = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)


def test_colorize_by_hand_and_ignore_black():
    lab = np.array([[0, 1], [2, 255]], np.uint8)
    out = colorize(lab, PAL)
    assert out.tolist() == [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [0, 0, 0]]]
    assert np.array_equal(colorize(torch.tensor(lab).long(), PAL), out)


def test_overlay_blends_and_leaves_ignore_alone():
    img = np.full((4, 4, 3), 100, np.uint8)
    lab = np.full((4, 4), 255, np.uint8)
    lab[:2, :2] = 0
    out = overlay(img, lab, PAL, alpha=0.5)
    assert out[0, 0].tolist() == [178, 50, 50]  # 0.5*100 + 0.5*255, rounded
    assert out[3, 3].tolist() == [100, 100, 100]


def test_legend_marks_and_panel_layout(synthetic_root):
    leg = legend_image(["a", "b", "c"], PAL, [0, 2], marked=[2])
    assert leg.ndim == 3 and leg.shape[0] < 80
    sheet = panel([[np.zeros((10, 12, 3), np.uint8)] * 2] * 3, ["x", "y"])
    assert sheet.width >= 24 and sheet.height >= 30
    info = load_classes(synthetic_root)
    img = np.zeros((64, 64, 3), np.uint8)
    lab = np.full((64, 64), info.unseen_ids[0], np.uint8)
    cs = contact_sheet([img, img], [lab, lab], info, preds=[lab, lab], names=["p", "q"])
    assert cs.width > 3 * 192 and cs.height > 2 * 192


def test_panel_titles_stay_inside_their_columns():
    """Long column titles (the demo's "background_free (ensemble)" over 128 px cells) are
    wrapped: in the title band no dark pixel lies outside a column's slot, and every column's
    title is drawn."""
    w, gap = 128, 4
    titles = ["image", "baseline (segmenter)", "background_free (ensemble)",
              "averyveryverylongnamewithoutanybreak (segmenter)"]
    sheet = np.asarray(panel([[np.full((w, w, 3), 255, np.uint8)] * 4], titles, gap=gap))
    band = sheet[: sheet.shape[0] - w - 2 * gap].min(axis=2) < 128  # dark text pixels
    assert band.shape[0] > 2 * 14  # the long titles took more than one line
    for j in range(len(titles)):
        start = gap + j * (w + gap)
        assert band[:, start: start + w].any()  # the title is there
        assert not band[:, start + w: start + w + gap].any()  # and never crosses into the next
    assert not band[:, : gap].any()


@given(st.text(alphabet="ab _()", max_size=60), st.integers(20, 200))
def test_wrapped_title_lines_fit_and_keep_every_character(title, width):
    from celseg.viz.overlay import _font, wrap_title

    font = _font(14)
    lines = wrap_title(title, width, font)
    assert "".join(lines).replace(" ", "") == title.replace(" ", "")
    assert all(font.getlength(line) <= width or len(line) == 1 for line in lines)
