"""Quality of pseudo labels against the hidden true labels of the training split.

Counts are kept in a (C+1, C+1) matrix ``M[truth, pseudo]`` over every pixel, with the ignore
index (255) mapped to the extra last bin. For an unseen class c:

* precision = M[c, c] / (pixels labelled c whose true label is known), i.e. pseudo pixels that fall
  on truly unlabelled (255) pixels are left out, since nothing can be said about them;
* recall = M[c, c] / (pixels whose true label is c);
* coverage (over all unseen classes) = true-unseen pixels that received any unseen pseudo label /
  true-unseen pixels; accuracy = true-unseen pixels labelled with their own class / true-unseen
  pixels.

Values are percentages; a ratio with an empty denominator is None (null in JSON).
"""

from __future__ import annotations

import torch
from torch import Tensor

from celseg.data.classes import ClassInfo


class PseudoLabelStats:
    """Accumulates ``M[truth, pseudo]`` (C+1, C+1) int64; the last bin is the ignore index."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes + 1, num_classes + 1, dtype=torch.int64)

    def _bins(self, label: Tensor) -> Tensor:
        label = label.long().flatten()
        bad = (label != self.ignore_index) & ((label < 0) | (label >= self.num_classes))
        if bad.any():
            raise ValueError(f"label value {int(label[bad][0])} outside 0..{self.num_classes - 1}"
                             f" and not {self.ignore_index}")
        return torch.where(label == self.ignore_index, self.num_classes, label)

    def update(self, pseudo: Tensor, truth: Tensor) -> None:
        """pseudo, truth: (H, W) integer label maps of the same image."""
        n = self.num_classes + 1
        idx = self._bins(truth) * n + self._bins(pseudo)
        self.matrix += torch.bincount(idx, minlength=n * n).view(n, n)


def _pct(num: int, den: int) -> float | None:
    return 100.0 * num / den if den > 0 else None


def summarize(matrix: Tensor, class_info: ClassInfo) -> dict:
    """Report dict from a ``PseudoLabelStats.matrix`` (see the module docstring).

    Keys: ``per_class`` ({unseen name: {precision, recall, labelled, correct, true}}),
    ``coverage``, ``accuracy``, ``unseen_pixels``, ``labelled_pixels`` (pixels given an unseen
    pseudo label), ``labelled_on_unlabelled`` (of those, pixels whose true label is 255).
    """
    m = matrix.long()
    ign = m.shape[0] - 1
    unseen = class_info.unseen_ids
    per_class = {}
    for c in unseen:
        labelled_known = int(m[:ign, c].sum())
        true = int(m[c].sum())
        correct = int(m[c, c])
        per_class[class_info.names[c]] = {
            "precision": _pct(correct, labelled_known),
            "recall": _pct(correct, true),
            "labelled": int(m[:, c].sum()),
            "correct": correct,
            "true": true,
        }
    unseen_pixels = int(m[unseen].sum()) if unseen else 0
    covered = int(m[unseen][:, unseen].sum()) if unseen else 0
    correct_all = sum(int(m[c, c]) for c in unseen)
    return {
        "per_class": per_class,
        "coverage": _pct(covered, unseen_pixels),
        "accuracy": _pct(correct_all, unseen_pixels),
        "unseen_pixels": unseen_pixels,
        "labelled_pixels": int(m[:, unseen].sum()) if unseen else 0,
        "labelled_on_unlabelled": int(m[ign, unseen].sum()) if unseen else 0,
    }


def _fmt(v: float | None) -> str:
    return "   n/a" if v is None else f"{v:6.1f}"


def format_table(report: dict) -> str:
    """A plain-text table of per-class precision / recall and the totals."""
    names = list(report["per_class"])
    width = max([len("class"), *(len(n) for n in names)])
    lines = [f"{'class':<{width}}  precision  recall  labelled px   true px"]
    for name, row in report["per_class"].items():
        lines.append(f"{name:<{width}}     {_fmt(row['precision'])}  {_fmt(row['recall'])}"
                     f"  {row['labelled']:11d}  {row['true']:8d}")
    lines.append(f"coverage of unseen pixels: {_fmt(report['coverage']).strip()}%   "
                 f"correct: {_fmt(report['accuracy']).strip()}%   "
                 f"labelled on truly unlabelled pixels: {report['labelled_on_unlabelled']}")
    return "\n".join(lines)
