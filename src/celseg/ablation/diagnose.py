"""Where do unseen pixels go? A diagnostic of trained ablation runs.

For every run the checkpoint is re-evaluated on the validation split with all class names as the
vocabulary, keeping the full confusion matrix ``M[gt, pred]``. Over the ground-truth pixels of
unseen classes it reports the share predicted as

- the correct unseen class,
- another unseen class,
- a seen class that shares a word with the true name ("blue circle" for an unseen "blue square":
  attribute transfer that picked the seen neighbour),
- any other seen class;

and the seen / unseen / hIoU obtained with the peers' fixed seen-class calibration (ZegFormer and
ZegCLIP subtract 0.1 from seen-class probabilities), which is NOT what the main table uses.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from celseg.ablation.runner import RunRecord
from celseg.data.classes import ClassInfo

CALIBRATION = 0.1


def unseen_destinations(matrix: torch.Tensor, info: ClassInfo) -> dict[str, float]:
    """Shares (%) of unseen ground-truth pixels by where they were predicted; (C,C) matrix."""
    m = matrix.to(torch.float64)
    unseen, seen = info.unseen_ids, info.seen_ids
    total = m[unseen].sum().item()
    if total == 0:
        return {k: math.nan for k in ("correct", "other_unseen", "seen_sharing_word",
                                      "seen_other")}
    correct = sum(m[u, u].item() for u in unseen)
    other_unseen = sum(m[u, v].item() for u in unseen for v in unseen if v != u)
    sharing = other = 0.0
    for u in unseen:
        words = set(info.names[u].split())
        for s in seen:
            if words & set(info.names[s].split()):
                sharing += m[u, s].item()
            else:
                other += m[u, s].item()
    return {"correct": 100 * correct / total, "other_unseen": 100 * other_unseen / total,
            "seen_sharing_word": 100 * sharing / total, "seen_other": 100 * other / total}


@torch.no_grad()
def confusion_matrices(ckpt: Path, data_root: str, batch_size: int = 16
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(plain, calibrated) confusion matrices of a checkpoint on the validation split."""
    from torch.utils.data import DataLoader

    from celseg.data.classes import load_classes
    from celseg.data.dataset import SegmentationDataset, collate
    from celseg.engine.checkpoint import load_segmenter
    from celseg.engine.evaluator import pad_batch
    from celseg.engine.trainer import class_text_embeddings
    from celseg.evaluation.metrics import ConfusionMatrix
    from celseg.models.inference import semantic_map

    info = load_classes(data_root)
    model, cfg = load_segmenter(ckpt)
    emb = class_text_embeddings(cfg.model.vlm, list(info.names))
    dataset = SegmentationDataset(data_root, cfg.data.val_split, view="full",
                                  max_items=cfg.data.max_val)
    plain, calibrated = ConfusionMatrix(info.num_classes), ConfusionMatrix(info.num_classes)
    for images, labels, _ in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        images, labels = pad_batch(images, labels)
        outputs = model(images, emb)
        size = tuple(labels.shape[-2:])
        has_bg = bool(model.has_background)
        plain.update(semantic_map(outputs, size, has_background=has_bg), labels)
        calibrated.update(semantic_map(outputs, size, seen_ids=info.seen_ids,
                                       calibration=CALIBRATION, has_background=has_bg), labels)
    return plain.matrix, calibrated.matrix


def diagnose(records: list[RunRecord], data_root: str) -> dict[str, dict]:
    """Per variant, means over seeds of the unseen-pixel destinations and calibrated metrics."""
    from celseg.data.classes import load_classes
    from celseg.evaluation.metrics import summarize

    info = load_classes(data_root)
    per_variant: dict[str, list[dict]] = {}
    for rec in records:
        plain, calibrated = confusion_matrices(
            rec.out_dir / "checkpoints" / "last.safetensors", data_root)
        cal = summarize(calibrated, info)
        row = {**unseen_destinations(plain, info),
               "cal_seen": cal["miou_seen"], "cal_unseen": cal["miou_unseen"],
               "cal_hiou": cal["hiou"]}
        per_variant.setdefault(rec.variant.key, []).append(row)
    return {key: {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
            for key, rows in per_variant.items()}


def diagnosis_table(diag: dict[str, dict]) -> str:
    lines = [
        "| variant | unseen px: correct | other unseen | seen, shares a word | other seen | "
        f"calibrated ({CALIBRATION}) seen / unseen / hIoU |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, d in diag.items():
        lines.append(
            f"| {key} | {d['correct']:.1f} | {d['other_unseen']:.1f} | "
            f"{d['seen_sharing_word']:.1f} | {d['seen_other']:.1f} | "
            f"{d['cal_seen']:.1f} / {d['cal_unseen']:.1f} / {d['cal_hiou']:.1f} |"
        )
    return "\n".join(lines)
