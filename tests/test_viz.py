"""Overlay pictures: colours against hand-computed values, legend and sheet sizes."""

from __future__ import annotations

import numpy as np
import torch

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
