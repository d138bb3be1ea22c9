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


def image_vlm(eval_cfg: EvalConfig, default: Any) -> Any:
    """The image-path VLM of an evaluation: ``eval.two_stage_vlm`` for two-stage when set, else
    ``eval.vlm``, else ``default`` (the caller passes the run's model.vlm)."""
    if eval_cfg.two_stage and eval_cfg.two_stage_vlm:
        return eval_cfg.two_stage_vlm
    return eval_cfg.vlm or default


def extra_protocols(protocol: str, path: Any) -> tuple[str, ...]:
    """Protocols computed alongside the main one from the same forward pass."""
    if protocol == "segmenter":
        return ()
    extras = ["segmenter"]
    if path.oov is not None:
        extras += [p for p in ("ensemble", "vlm") if p != protocol]
    return tuple(extras)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, text_emb: torch.Tensor, class_info: ClassInfo,
             eval_cfg: EvalConfig, device: torch.device | str, progress: bool = False,
             vlm: Any = None, labelled_ids: tuple[int, ...] | None = None,
             pseudo_ids: tuple[int, ...] = ()) -> dict:
    """Summary dict of :func:`celseg.evaluation.metrics.summarize` for the run's protocol, plus
    ``protocol`` and ``protocols`` (every protocol computed from the same forward passes).

    model: a Segmenter (not DDP-wrapped); dataset yields (image (3,H,W) normalised, label (H,W)
    dataset ids, meta); text_emb: (C, D) normalised embeddings of ALL class names in id order
    (rows of the eval vocabulary are selected here). ``vlm``: the image-path VLM (object or name;
    see :func:`image_vlm`); ``labelled_ids`` / ``pseudo_ids``: dataset ids with ground-truth /
    only pseudo labels in training (default: the seen classes), which set the ensemble weights.
    For models with a background column the summary has ``unseen_as_background`` /
    ``seen_as_background``: % of unseen / seen GT pixels whose C+1 argmax is no-object (not
    computed with ``eval.sliding_window``).
    """
    from celseg.data.dataset import collate
    from celseg.data.transforms import to_unit_rgb
    from celseg.engine.protocol import build_inference

    device = torch.device(device)
    vocab_list = eval_vocabulary(class_info, eval_cfg.vocabulary)
    vocab_ids = torch.tensor(vocab_list, dtype=torch.long)
    emb = text_emb.to(device)[vocab_ids.to(device)]
    id_is_seen = torch.tensor([s == "seen" for s in class_info.splits])
    seen_positions = [i for i, c in enumerate(vocab_ids.tolist()) if id_is_seen[c]]
    labelled = set(class_info.seen_ids if labelled_ids is None else labelled_ids)
    names = [class_info.names[c] for c in vocab_list]
    path = build_inference(
        model, eval_cfg, names, [class_info.names[c] for c in labelled],
        [class_info.names[c] for c in pseudo_ids], image_vlm(eval_cfg, vlm),
        device, seen_positions=seen_positions,
        unseen_positions=[i for i, c in enumerate(vocab_list) if class_info.splits[c] == "unseen"])
    protocols = (path.protocol, *extra_protocols(path.protocol, path))
    has_bg = path.has_background
    ignore = dataset_ignore_index(dataset, class_info)

    cms = {p: ConfusionMatrix(class_info.num_classes, ignore) for p in protocols}
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
            size = tuple(labels.shape[-2:])
            if eval_cfg.sliding_window:
                preds = _sliding_labels(model, images, emb, path, protocols, eval_cfg)
            else:
                outputs = model(images, emb)
                preds = path.labels(outputs, to_unit_rgb(images), size, protocols)
            for name, pred in preds.items():
                cms[name].update(vocab_ids[pred.cpu()], labels)
            if has_bg and not eval_cfg.sliding_window:
                bg_counts += _background_counts(outputs, labels, id_is_seen, ignore,
                                                class_info.num_classes)
    finally:
        model.train(was_training)
    for cm in cms.values():
        cm.all_reduce()
    summary = summarize(cms[path.protocol].matrix, class_info)
    if has_bg:
        from celseg.engine.distributed import is_dist

        if is_dist():
            import torch.distributed as dist

            dist.all_reduce(bg_counts)
        summary["unseen_as_background"] = _pct(bg_counts[0], bg_counts[1])
        summary["seen_as_background"] = _pct(bg_counts[2], bg_counts[3])
    summary["protocol"] = path.protocol
    # each protocol's confusion matrix M[gt, pred] (dataset ids) rides along: the ablation's
    # diagnosis reads it instead of evaluating again
    summary["protocols"] = {p: summarize(cms[p].matrix, class_info) for p in protocols}
    if class_info.num_classes <= 256:
        for p in protocols:
            summary["protocols"][p]["confusion"] = cms[p].matrix.tolist()
    summary["vocabulary"] = eval_cfg.vocabulary
    summary["seen_calibration"] = eval_cfg.seen_calibration
    if path.oov is not None:
        summary["ensemble"] = {"alpha": eval_cfg.ensemble_alpha, "beta": eval_cfg.ensemble_beta,
                               "pseudo": eval_cfg.ensemble_pseudo, "pooling": eval_cfg.pooling,
                               "logit_scale": eval_cfg.oov_logit_scale,
                               "renorm": eval_cfg.ensemble_renorm,
                               "dense_input_scale": eval_cfg.dense_input_scale}
    if path.protocol == "two_stage":
        summary["two_stage"] = {"vlm": str(getattr(path.two_stage.vlm, "name", "")),
                                "clip_weight_seen": eval_cfg.clip_weight_seen,
                                "clip_weight_unseen": eval_cfg.clip_weight_unseen,
                                "crop_size": eval_cfg.two_stage_crop_size}
    return summary


def _background_counts(outputs: dict, labels: torch.Tensor, id_is_seen: torch.Tensor,
                       ignore: int, num_classes: int) -> torch.Tensor:
    """(4,) int64: no-object votes on unseen GT pixels, unseen total, on seen, seen total."""
    votes = background_votes(outputs, tuple(labels.shape[-2:])).cpu()
    valid = (labels != ignore) & (labels >= 0) & (labels < num_classes)
    is_seen = id_is_seen[labels.clamp(0, num_classes - 1)]
    gt_seen, gt_unseen = is_seen & valid, ~is_seen & valid
    return torch.tensor([int((votes & gt_unseen).sum()), int(gt_unseen.sum()),
                         int((votes & gt_seen).sum()), int(gt_seen.sum())])


def _sliding_labels(model: nn.Module, images: torch.Tensor, emb: torch.Tensor, path: Any,
                    protocols: tuple[str, ...], eval_cfg: EvalConfig) -> dict[str, torch.Tensor]:
    """{protocol: (B,H,W) vocabulary positions} from window-averaged class probabilities."""
    from celseg.engine.sliding import path_predictor, sliding_window
    from celseg.models.inference import calibrate

    probs = sliding_window(path_predictor(model, emb, path, protocols), images,
                           eval_cfg.window_size, eval_cfg.window_stride)  # (B,P*V,H,W)
    return {name: calibrate(p, path.seen_positions, path.calibration).argmax(1)
            for name, p in zip(protocols, probs.chunk(len(protocols), dim=1), strict=True)}


def _pct(hits: torch.Tensor, total: torch.Tensor) -> float:
    return 100.0 * float(hits) / float(total) if int(total) else float("nan")
