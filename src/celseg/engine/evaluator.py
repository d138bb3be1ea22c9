"""Evaluation of a segmenter on a labelled split: confusion matrix -> seen / unseen / hIoU.

The vocabulary at evaluation time is every class name of the dataset (``eval.vocabulary=all``,
the zero-shot protocol) or only the seen names. Under ``torch.distributed`` every rank evaluates
a strided shard of the dataset and the confusion matrices are summed over ranks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from celseg.config import EvalConfig
from celseg.data.classes import ClassInfo
from celseg.engine.vocab import eval_vocabulary
from celseg.evaluation.metrics import ConfusionMatrix, summarize

PAD_MULTIPLE = 32  # the backbone's largest stride


def pad_batch(images: torch.Tensor, labels: torch.Tensor | None = None,
              multiple: int = PAD_MULTIPLE, ignore_index: int = 255
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pad (B,3,H,W) images with 0 and (B,H,W) labels with ignore to a multiple of ``multiple``."""
    h, w = images.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        images = F.pad(images, (0, pw, 0, ph))
        if labels is not None:
            labels = F.pad(labels, (0, pw, 0, ph), value=ignore_index)
    return images, labels


def _shard(dataset: Dataset) -> Dataset:
    from celseg.engine.distributed import is_dist

    if not is_dist():
        return dataset
    import torch.distributed as dist

    return Subset(dataset, list(range(dist.get_rank(), len(dataset), dist.get_world_size())))


@torch.no_grad()
def background_votes(outputs: dict, out_size: tuple[int, int]) -> torch.Tensor:
    """(B,H,W) bool: where the argmax over C+1 (no-object kept) picks the no-object column.

    Same aggregation as inference, S(c,x) = sum_q softmax(z_q)[c] sigmoid(M_q(x)), but over all
    C+1 columns, i.e. before the no-object column is dropped. Baseline models only.
    """
    from celseg.models.inference import semantic_probs

    probs = semantic_probs(outputs["pred_logits"], outputs["pred_masks"], False)  # (B,C+1,h,w)
    probs = F.interpolate(probs.float(), size=out_size, mode="bilinear", align_corners=False)
    return probs.argmax(dim=1) == probs.shape[1] - 1


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, text_emb: torch.Tensor, class_info: ClassInfo,
             eval_cfg: EvalConfig, device: torch.device | str, progress: bool = False) -> dict:
    """Summary dict of :func:`celseg.evaluation.metrics.summarize`, plus diagnostics.

    model: a Segmenter (not DDP-wrapped); dataset yields (image (3,H,W) normalised, label (H,W)
    dataset ids, meta); text_emb: (C, D) normalised embeddings of ALL class names in id order
    (rows of the eval vocabulary are selected here). For models with a background column the
    summary has ``unseen_as_background`` / ``seen_as_background``: % of unseen / seen GT pixels
    whose C+1 argmax is no-object (not computed with ``eval.sliding_window``).
    """
    from celseg.data.dataset import collate
    from celseg.models.inference import semantic_map

    device = torch.device(device)
    vocab_ids = torch.tensor(eval_vocabulary(class_info, eval_cfg.vocabulary), dtype=torch.long)
    emb = text_emb.to(device)[vocab_ids.to(device)]
    id_is_seen = torch.tensor([s == "seen" for s in class_info.splits])
    seen_positions = [i for i, c in enumerate(vocab_ids.tolist()) if id_is_seen[c]]
    has_bg = bool(getattr(model, "has_background", False))

    cm = ConfusionMatrix(class_info.num_classes, class_info.ignore_index)
    # no-object votes: unseen hits, unseen total, seen hits, seen total
    bg_counts = torch.zeros(4, dtype=torch.int64)
    loader = DataLoader(_shard(dataset), batch_size=eval_cfg.batch_size, shuffle=False,
                        collate_fn=collate)
    was_training = model.training
    model.eval()
    try:
        for images, labels, _ in tqdm(loader, desc="evaluate", disable=not progress,
                                      leave=False):
            images, labels = pad_batch(images, labels, ignore_index=class_info.ignore_index)
            images = images.to(device)
            if eval_cfg.sliding_window:
                pred = _sliding_map(model, images, emb, has_bg, eval_cfg, seen_positions)
            else:
                outputs = model(images, emb)
                pred = semantic_map(outputs, tuple(labels.shape[-2:]), seen_ids=seen_positions,
                                    calibration=eval_cfg.seen_calibration,
                                    has_background=has_bg)
            cm.update(vocab_ids[pred.cpu()], labels)
            if has_bg and not eval_cfg.sliding_window:
                votes = background_votes(outputs, tuple(labels.shape[-2:])).cpu()
                valid = labels != class_info.ignore_index
                gt_seen = id_is_seen[labels.clamp(0, class_info.num_classes - 1)] & valid
                gt_unseen = ~id_is_seen[labels.clamp(0, class_info.num_classes - 1)] & valid
                bg_counts += torch.tensor([
                    int((votes & gt_unseen).sum()), int(gt_unseen.sum()),
                    int((votes & gt_seen).sum()), int(gt_seen.sum()),
                ])
    finally:
        model.train(was_training)
    cm.all_reduce()
    summary = summarize(cm.matrix, class_info)
    if has_bg:
        from celseg.engine.distributed import is_dist

        if is_dist():
            import torch.distributed as dist

            dist.all_reduce(bg_counts)
        summary["unseen_as_background"] = _pct(bg_counts[0], bg_counts[1])
        summary["seen_as_background"] = _pct(bg_counts[2], bg_counts[3])
    summary["vocabulary"] = eval_cfg.vocabulary
    summary["seen_calibration"] = eval_cfg.seen_calibration
    return summary


def _sliding_map(model: nn.Module, images: torch.Tensor, emb: torch.Tensor, has_bg: bool,
                 eval_cfg: EvalConfig, seen_positions: list[int]) -> torch.Tensor:
    """(B,H,W) vocabulary indices from window-averaged class probabilities."""
    from celseg.engine.sliding import segmenter_predictor, sliding_window

    probs = sliding_window(segmenter_predictor(model, emb, has_bg), images,
                           eval_cfg.window_size, eval_cfg.window_stride)  # (B,V,H,W)
    if eval_cfg.seen_calibration and seen_positions:
        probs[:, seen_positions] -= eval_cfg.seen_calibration
    return probs.argmax(1)


def _pct(hits: torch.Tensor, total: torch.Tensor) -> float:
    return 100.0 * float(hits) / float(total) if int(total) else float("nan")
