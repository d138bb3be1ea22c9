"""Evaluation of a segmenter on a labelled split: confusion matrix -> seen / unseen / hIoU.

The vocabulary at evaluation time is every class name of the dataset (``eval.vocabulary=all``,
the zero-shot protocol) or only the seen names. Under ``torch.distributed`` every rank evaluates
a strided shard of the dataset and the confusion matrices are summed over ranks.

Label tensors use the dataset's ignore value (``dataset.ignore_index``: 255 for <= 255 classes,
else ``class_info.ignore_index``, e.g. 65535); batching, padding and the confusion matrix all use
it. With ``eval.two_stage`` the segmenter's proposals are re-classified by a VLM image encoder
(``celseg.models.two_stage``), also inside the sliding window.
"""

from __future__ import annotations

import functools
from typing import Any

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


def dataset_ignore_index(dataset: Dataset, class_info: ClassInfo) -> int:
    """Ignore value of the dataset's label tensors: ``dataset.ignore_index`` when it has one,
    else :func:`celseg.data.dataset.label_ignore_index` of ``class_info``."""
    from celseg.data.dataset import label_ignore_index

    value = getattr(dataset, "ignore_index", None)
    return int(value) if value is not None else label_ignore_index(class_info)


class TwoStage:
    """What two-stage inference needs for one vocabulary: the VLM image encoder, its text
    embeddings of the vocabulary (V, D) and the vocabulary positions of the unseen classes."""

    def __init__(self, vlm: nn.Module, clip_text_emb: torch.Tensor, unseen_positions: list[int],
                 eval_cfg: EvalConfig):
        self.vlm = vlm
        self.clip_text_emb = clip_text_emb
        self.unseen_positions = unseen_positions
        self.cfg = eval_cfg

    def probs(self, outputs: dict, images: torch.Tensor, has_background: bool) -> torch.Tensor:
        """(B,V,h,w) two-stage scores; ``images`` (B,3,H,W) ImageNet-normalised."""
        from celseg.data.transforms import denormalize
        from celseg.models.two_stage import two_stage_probs

        return two_stage_probs(
            outputs, denormalize(images.float()).clamp(0, 1), self.vlm, self.clip_text_emb,
            self.unseen_positions, has_background,
            clip_weight_seen=self.cfg.clip_weight_seen,
            clip_weight_unseen=self.cfg.clip_weight_unseen,
            crop_size=self.cfg.two_stage_crop_size)


def build_two_stage(vlm: Any, class_info: ClassInfo, vocab_ids: list[int], eval_cfg: EvalConfig,
                    device: torch.device) -> TwoStage:
    """``vlm``: a loaded VisionLanguageModel, or a name / folder for ``load_vlm`` ("" or None:
    ``eval_cfg.two_stage_vlm``)."""
    from celseg.errors import CelsegError
    from celseg.vlm.cache import text_embeddings

    if vlm is None or (isinstance(vlm, str) and not vlm):
        vlm = eval_cfg.two_stage_vlm
    if isinstance(vlm, str):
        if not vlm:
            raise CelsegError("eval.two_stage needs an image encoder: set eval.two_stage_vlm "
                              "(or pass the model's model.vlm)")
        from celseg.vlm.registry import load_vlm

        vlm = load_vlm(vlm, device=str(device))
    names = [class_info.names[c] for c in vocab_ids]
    with torch.no_grad():
        clip_emb = text_embeddings(vlm, names).detach().float().to(device)
    unseen = [i for i, c in enumerate(vocab_ids) if class_info.splits[c] == "unseen"]
    return TwoStage(vlm, clip_emb, unseen, eval_cfg)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, text_emb: torch.Tensor, class_info: ClassInfo,
             eval_cfg: EvalConfig, device: torch.device | str, progress: bool = False,
             two_stage_vlm: Any = None) -> dict:
    """Summary dict of :func:`celseg.evaluation.metrics.summarize`, plus diagnostics.

    model: a Segmenter (not DDP-wrapped); dataset yields (image (3,H,W) normalised, label (H,W)
    dataset ids, meta); text_emb: (C, D) normalised embeddings of ALL class names in id order
    (rows of the eval vocabulary are selected here). For models with a background column the
    summary has ``unseen_as_background`` / ``seen_as_background``: % of unseen / seen GT pixels
    whose C+1 argmax is no-object (not computed with ``eval.sliding_window``).
    With ``eval_cfg.two_stage``, ``two_stage_vlm`` is the image encoder (a VisionLanguageModel
    or a name / folder; None or "": ``eval_cfg.two_stage_vlm``); callers pass the model's
    ``model.vlm`` when ``eval.two_stage_vlm`` is empty.
    """
    from celseg.data.dataset import collate
    from celseg.models.inference import semantic_map

    device = torch.device(device)
    vocab_list = eval_vocabulary(class_info, eval_cfg.vocabulary)
    vocab_ids = torch.tensor(vocab_list, dtype=torch.long)
    emb = text_emb.to(device)[vocab_ids.to(device)]
    id_is_seen = torch.tensor([s == "seen" for s in class_info.splits])
    seen_positions = [i for i, c in enumerate(vocab_ids.tolist()) if id_is_seen[c]]
    has_bg = bool(getattr(model, "has_background", False))
    ignore = dataset_ignore_index(dataset, class_info)
    two_stage = (build_two_stage(two_stage_vlm, class_info, vocab_list, eval_cfg, device)
                 if eval_cfg.two_stage else None)

    cm = ConfusionMatrix(class_info.num_classes, ignore)
    # no-object votes: unseen hits, unseen total, seen hits, seen total
    bg_counts = torch.zeros(4, dtype=torch.int64)
    loader = DataLoader(_shard(dataset), batch_size=eval_cfg.batch_size, shuffle=False,
                        collate_fn=functools.partial(collate, ignore_index=ignore))
    was_training = model.training
    model.eval()
    try:
        for images, labels, _ in tqdm(loader, desc="evaluate", disable=not progress,
                                      leave=False):
            images, labels = pad_batch(images, labels, ignore_index=ignore)
            images = images.to(device)
            if eval_cfg.sliding_window:
                pred = _sliding_map(model, images, emb, has_bg, eval_cfg, seen_positions,
                                    two_stage)
            else:
                outputs = model(images, emb)
                if two_stage is not None:
                    pred = probs_to_map(two_stage.probs(outputs, images, has_bg),
                                        tuple(labels.shape[-2:]), seen_positions,
                                        eval_cfg.seen_calibration)
                else:
                    pred = semantic_map(outputs, tuple(labels.shape[-2:]),
                                        seen_ids=seen_positions,
                                        calibration=eval_cfg.seen_calibration,
                                        has_background=has_bg)
            cm.update(vocab_ids[pred.cpu()], labels)
            if has_bg and not eval_cfg.sliding_window:
                votes = background_votes(outputs, tuple(labels.shape[-2:])).cpu()
                valid = (labels != ignore) & (labels >= 0) & (labels < class_info.num_classes)
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
    if two_stage is not None:
        summary["two_stage"] = {"vlm": str(getattr(two_stage.vlm, "name", "")),
                                "clip_weight_seen": eval_cfg.clip_weight_seen,
                                "clip_weight_unseen": eval_cfg.clip_weight_unseen,
                                "crop_size": eval_cfg.two_stage_crop_size}
    return summary


def probs_to_map(probs: torch.Tensor, out_size: tuple[int, int], seen_positions: list[int],
                 calibration: float) -> torch.Tensor:
    """(B,V,h,w) scores -> (B,H,W) vocabulary indices, as ``semantic_map``: resized bilinearly,
    normalised over classes, ``calibration`` subtracted from the seen columns, argmax."""
    probs = F.interpolate(probs.float(), size=tuple(out_size), mode="bilinear",
                          align_corners=False)
    probs = probs / probs.sum(1, keepdim=True).clamp_min(1e-6)
    if calibration and seen_positions:
        probs[:, seen_positions] -= calibration
    return probs.argmax(1)


def _sliding_map(model: nn.Module, images: torch.Tensor, emb: torch.Tensor, has_bg: bool,
                 eval_cfg: EvalConfig, seen_positions: list[int],
                 two_stage: TwoStage | None = None) -> torch.Tensor:
    """(B,H,W) vocabulary indices from window-averaged class probabilities."""
    from celseg.engine.sliding import segmenter_predictor, sliding_window, two_stage_predictor

    predict = (segmenter_predictor(model, emb, has_bg) if two_stage is None
               else two_stage_predictor(model, emb, has_bg, two_stage.probs))
    probs = sliding_window(predict, images, eval_cfg.window_size,
                           eval_cfg.window_stride)  # (B,V,H,W)
    if eval_cfg.seen_calibration and seen_positions:
        probs[:, seen_positions] -= eval_cfg.seen_calibration
    return probs.argmax(1)


def _pct(hits: torch.Tensor, total: torch.Tensor) -> float:
    return 100.0 * float(hits) / float(total) if int(total) else float("nan")
