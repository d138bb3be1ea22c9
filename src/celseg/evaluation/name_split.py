"""Open-vocabulary scores split by name: classes whose name the training data had (shared)
and the others (new), as cross-dataset tables report them (e.g. VOC's names inside COCO's)."""

from __future__ import annotations

import math
from collections.abc import Iterable


def _present_iou(entry: dict) -> float | None:
    iou = entry.get("iou")
    if not entry.get("present", True) or iou is None or math.isnan(iou):
        return None
    return float(iou)


def name_split_miou(per_class: dict[str, dict], train_names: Iterable[str]) -> dict:
    """mIoU (%) over every class present, over those named in ``train_names`` and the others.

    per_class: ``{name: {"iou", "present", ...}}`` of :func:`celseg.evaluation.metrics.summarize`
    (classes absent from the ground truth are left out, as in ``miou_all``). Returns ``all``,
    ``shared``, ``new`` (NaN when a group has no class present) and the class counts
    ``n_shared`` / ``n_new`` of the evaluated dataset.
    """
    known = set(train_names)
    groups: dict[str, list[float]] = {"all": [], "shared": [], "new": []}
    for name, entry in per_class.items():
        iou = _present_iou(entry)
        if iou is not None:
            groups["all"].append(iou)
            groups["shared" if name in known else "new"].append(iou)
    out = {k: sum(v) / len(v) if v else math.nan for k, v in groups.items()}
    out["n_shared"] = sum(name in known for name in per_class)
    out["n_new"] = len(per_class) - out["n_shared"]
    return out
