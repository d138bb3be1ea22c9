"""Where do unseen pixels go? A diagnostic of trained ablation runs.

For every run, over the ground-truth pixels of unseen classes (validation split, all class names
as the vocabulary, confusion matrix ``M[gt, pred]``) it reports the share predicted as

- the correct unseen class,
- another unseen class,
- a seen class that shares a word with the true name ("blue circle" for an unseen "blue square":
  attribute transfer that picked the seen neighbour),
- any other seen class;

under each protocol (the segmenter alone and the ensemble), each run with the unseen classes of
its split, from the confusion matrices that every run's final evaluation writes into its
metrics.json (no second evaluation loop).
"""

from __future__ import annotations

import math

import torch

from celseg.ablation.runner import RunRecord
from celseg.data.classes import ClassInfo, load_classes


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


def diagnose(records: list[RunRecord], data_root: str,
             protocols: tuple[str, ...] = ("segmenter", "ensemble")) -> dict[str, dict]:
    """Per variant and protocol, means over runs (splits x seeds) of the unseen-pixel
    destinations, read from the confusion matrices each run's final evaluation stored in its
    metrics.json; a run's unseen classes are those of its split (``rec.data_root``, else
    ``data_root``)."""
    infos: dict[str, ClassInfo] = {}
    per_key: dict[str, list[dict]] = {}
    for rec in records:
        root = rec.data_root or data_root
        info = infos.setdefault(root, load_classes(root))
        for protocol in protocols:
            entry = rec.summary.get("protocols", {}).get(protocol)
            if entry is None or "confusion" not in entry:
                continue
            matrix = torch.tensor(entry["confusion"], dtype=torch.int64)
            key = f"{rec.variant.key} ({protocol})"
            per_key.setdefault(key, []).append(unseen_destinations(matrix, info))
    return {key: {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
            for key, rows in per_key.items()}


def diagnosis_table(diag: dict[str, dict]) -> str:
    lines = [
        "| variant (protocol) | unseen px: correct | other unseen | seen, shares a word | "
        "other seen |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, d in diag.items():
        lines.append(
            f"| {key} | {d['correct']:.1f} | {d['other_unseen']:.1f} | "
            f"{d['seen_sharing_word']:.1f} | {d['seen_other']:.1f} |"
        )
    return "\n".join(lines)
