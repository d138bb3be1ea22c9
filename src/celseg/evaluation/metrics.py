"""Streaming semantic-segmentation metrics with the zero-shot protocol.

The confusion matrix ``M[g, p]`` counts pixels of ground-truth class ``g`` predicted as ``p``;
pixels whose ground truth equals ``ignore_index`` (or lies outside ``[0, C)``) are skipped.

Per class c:  IoU_c = M[c,c] / (sum_p M[c,p] + sum_g M[g,c] - M[c,c]),
acc_c = M[c,c] / sum_p M[c,p].
A class with no ground-truth pixel in the whole evaluation set is "absent": its IoU is NaN and it
is left out of every mean (the published protocol). mIoU is taken over the seen classes, the unseen
classes and all classes; hIoU = 2 S U / (S + U) (NaN when either mean is NaN, 0 when both are 0).
All reported numbers are percentages.
"""

from __future__ import annotations

import math

import torch

from celseg.data.classes import ClassInfo


class ConfusionMatrix:
    """Accumulates a (C, C) int64 confusion matrix, rows = ground truth, columns = prediction.

    The matrix lives on the device of the predictions it is given (it moves there on the first
    update), so evaluation on a GPU never copies label maps to the host."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch. pred, target: integer tensors of the same shape (any rank).

        Predictions outside ``[0, C)`` on labelled pixels are an error: they would silently vanish.
        """
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} != target {tuple(target.shape)}"
            )
        pred = pred.reshape(-1).to(torch.int64)
        target = target.reshape(-1).to(device=pred.device, dtype=torch.int64)
        if self.matrix.device != pred.device:
            self.matrix = self.matrix.to(pred.device)
        n = self.num_classes
        valid = (target != self.ignore_index) & (target >= 0) & (target < n)
        out_of_range = valid & ((pred < 0) | (pred >= n))
        if bool(out_of_range.any()):
            bad = pred[out_of_range][0].item()
            raise ValueError(f"predicted class id {bad} outside [0, {n})")
        # skipped pixels go to one extra bin, dropped after counting (no boolean indexing)
        index = torch.where(valid, target * n + pred, torch.full_like(pred, n * n))
        self.matrix += torch.bincount(index, minlength=n * n + 1)[: n * n].reshape(n, n)

    def merge(self, other: ConfusionMatrix) -> None:
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"cannot merge {other.num_classes}-class into {self.num_classes}-class"
            )
        self.matrix += other.matrix.to(self.matrix.device)

    def all_reduce(self) -> None:
        """Sum the matrix over all processes of an initialised ``torch.distributed`` group."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)


def per_class_iou(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(iou, acc, present) per class from a (C, C) matrix; iou/acc are NaN for absent classes."""
    m = matrix.to(torch.float64)
    tp = m.diagonal()
    gt = m.sum(dim=1)
    pred = m.sum(dim=0)
    present = gt > 0
    union = gt + pred - tp
    nan = torch.full_like(tp, float("nan"))
    iou = torch.where(present, tp / union.clamp(min=1), nan)
    acc = torch.where(present, tp / gt.clamp(min=1), nan)
    return iou, acc, present


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def harmonic_mean(seen: float, unseen: float) -> float:
    """hIoU = 2 S U / (S + U); NaN if either is NaN, 0 if both are 0."""
    if math.isnan(seen) or math.isnan(unseen):
        return float("nan")
    if seen + unseen == 0:
        return 0.0
    return 2 * seen * unseen / (seen + unseen)


def summarize(matrix: torch.Tensor, class_info: ClassInfo) -> dict:
    """Seen / unseen / all mIoU, hIoU, pixel accuracy and per-class numbers, as percentages."""
    if matrix.shape != (class_info.num_classes, class_info.num_classes):
        raise ValueError(
            f"matrix shape {tuple(matrix.shape)} does not match {class_info.num_classes} classes"
        )
    iou, acc, present = per_class_iou(matrix)
    iou_pct = [100.0 * float(v) for v in iou]
    per_class = {
        name: {
            "iou": iou_pct[i],
            "acc": 100.0 * float(acc[i]),
            "split": class_info.splits[i],
            "present": bool(present[i]),
        }
        for i, name in enumerate(class_info.names)
    }
    seen = _nanmean([iou_pct[i] for i in class_info.seen_ids])
    unseen = _nanmean([iou_pct[i] for i in class_info.unseen_ids])
    total = matrix.sum().item()
    return {
        "miou_seen": seen,
        "miou_unseen": unseen,
        "miou_all": _nanmean(iou_pct),
        "hiou": harmonic_mean(seen, unseen),
        "pixel_acc": 100.0 * matrix.diagonal().sum().item() / total if total else float("nan"),
        "num_pixels": int(total),
        "per_class": per_class,
    }


def _fmt(v: float) -> str:
    return "  n/a" if math.isnan(v) else f"{v:5.1f}"


def format_table(summary: dict, per_class: bool = True, title: str = "") -> str:
    """A plain-text table: headline numbers, then per-class IoU (unseen marked with '*')."""
    lines = []
    if title:
        lines.append(title)
    lines.append("| seen mIoU | unseen mIoU | hIoU | mIoU (all) | pixel acc |")
    lines.append("|---:|---:|---:|---:|---:|")
    lines.append(
        f"| {_fmt(summary['miou_seen'])} | {_fmt(summary['miou_unseen'])} | "
        f"{_fmt(summary['hiou'])} | {_fmt(summary['miou_all'])} | {_fmt(summary['pixel_acc'])} |"
    )
    if per_class:
        lines.append("")
        lines.append("| class | split | IoU | acc |")
        lines.append("|---|---|---:|---:|")
        for name, row in summary["per_class"].items():
            mark = "*" if row["split"] == "unseen" else ""
            lines.append(f"| {name}{mark} | {row['split']} | {_fmt(row['iou'])} | "
                         f"{_fmt(row['acc'])} |")
        lines.append("(* unseen; n/a = absent from the ground truth, left out of the means)")
    return "\n".join(lines)
