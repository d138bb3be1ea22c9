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
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from celseg.config import EvalConfig
from celseg.data.batching import collate, label_ignore_index, pad_batch
from celseg.data.classes import ClassInfo
from celseg.data.transforms import to_unit_rgb
from celseg.engine.distributed import is_dist
from celseg.engine.protocol import build_inference
from celseg.engine.sliding import path_predictor, sliding_window
from celseg.engine.vocab import eval_vocabulary
from celseg.evaluation.metrics import ConfusionMatrix, summarize
from celseg.models.inference import labels_from_probs, scores_to_labels, semantic_probs


def _shard(dataset: Dataset) -> Dataset:
    if not is_dist():
        return dataset
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    return Subset(dataset, list(range(rank, len(dataset), world)))


@torch.no_grad()
def background_votes(outputs: dict, out_size: tuple[int, int]) -> torch.Tensor:
    """(B,H,W) bool: where the argmax over C+1 (no-object kept) picks the no-object column.

    Same aggregation as inference, S(c,x) = sum_q softmax(z_q)[c] sigmoid(M_q(x)), but over all
    C+1 columns, i.e. before the no-object column is dropped. Baseline models only.
    """
    probs = semantic_probs(outputs["pred_logits"], outputs["pred_masks"], False)  # (B,C+1,h,w)
    return scores_to_labels(probs, out_size) == probs.shape[1] - 1  # argmax of the resized map


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
    ``protocol`` and ``protocols`` (every protocol computed from the same forward passes, each
    with its confusion matrix ``confusion`` M[gt, pred] in dataset ids when C <= 256).

    model: a Segmenter (not DDP-wrapped); dataset yields (image (3,H,W) normalised, label (H,W)
    dataset ids, meta); text_emb: (C, D) normalised embeddings of ALL class names in id order
    (rows of the eval vocabulary are selected here). ``vlm``: the image-path VLM (object or name;
    see :func:`image_vlm`); ``labelled_ids`` / ``pseudo_ids``: dataset ids with ground-truth /
    only pseudo labels in training (default: the seen classes), which set the ensemble weights.
    For models with a background column the summary has ``unseen_as_background`` /
    ``seen_as_background``: % of unseen / seen GT pixels whose C+1 argmax is no-object (not
    computed with ``eval.sliding_window``).
    """
    device = torch.device(device)
    vocab_ids = torch.tensor(eval_vocabulary(class_info, eval_cfg.vocabulary), dtype=torch.long)
    vocab = vocab_ids.tolist()
    names = [class_info.names[c] for c in vocab]
    labelled = set(class_info.seen_ids if labelled_ids is None else labelled_ids)
    path = build_inference(
        model, eval_cfg, names, [class_info.names[c] for c in labelled],
        [class_info.names[c] for c in pseudo_ids], image_vlm(eval_cfg, vlm), device,
        # the calibration lowers the classes the run was trained on with ground truth: every
        # class for an oracle, the seen ones for an inductive run (as the predictor does)
        seen_positions=[i for i, c in enumerate(vocab) if c in labelled],
        unseen_positions=[i for i, c in enumerate(vocab) if class_info.splits[c] == "unseen"])
    protocols = (path.protocol, *extra_protocols(path.protocol, path))
    heads = {p: (path, p) for p in protocols}
    cms, bg_counts = confusion_matrices(model, dataset, text_emb.to(device)[vocab_ids.to(device)],
                                        vocab_ids, heads, class_info, eval_cfg, device, progress)
    summary = summarize(cms[path.protocol].matrix, class_info)
    if path.has_background:
        summary["unseen_as_background"] = _pct(bg_counts[0], bg_counts[1])
        summary["seen_as_background"] = _pct(bg_counts[2], bg_counts[3])
    summary["protocol"] = path.protocol
    # each protocol's confusion matrix rides along: the ablation's diagnosis reads it instead of
    # evaluating again
    summary["protocols"] = {p: summarize(cms[p].matrix, class_info) for p in protocols}
    if class_info.num_classes <= 256:
        for p in protocols:
            summary["protocols"][p]["confusion"] = cms[p].matrix.tolist()
    summary["vocabulary"] = eval_cfg.vocabulary
    summary["seen_calibration"] = eval_cfg.seen_calibration
    summary.update(_settings(eval_cfg, path))
    return summary


def _settings(eval_cfg: EvalConfig, path: Any) -> dict:
    """The image-path settings a summary records: ``ensemble`` and / or ``two_stage``."""
    settings: dict[str, dict] = {}
    if path.oov is not None:
        settings["ensemble"] = {"alpha": eval_cfg.ensemble_alpha, "beta": eval_cfg.ensemble_beta,
                                "pseudo": eval_cfg.ensemble_pseudo, "pooling": eval_cfg.pooling,
                                "logit_scale": eval_cfg.oov_logit_scale,
                                "renorm": eval_cfg.ensemble_renorm,
                                "dense_input_scale": eval_cfg.dense_input_scale,
                                "pixel_weight": eval_cfg.ensemble_pixel_weight}
    if path.protocol == "two_stage":
        settings["two_stage"] = {"vlm": str(getattr(path.two_stage.vlm, "name", "")),
                                 "clip_weight_seen": eval_cfg.clip_weight_seen,
                                 "clip_weight_unseen": eval_cfg.clip_weight_unseen,
                                 "crop_size": eval_cfg.two_stage_crop_size}
    return settings


@torch.no_grad()
def confusion_matrices(model: nn.Module, dataset: Dataset, emb: torch.Tensor,
                       vocab_ids: torch.Tensor, heads: dict[str, tuple[Any, str]],
                       class_info: ClassInfo, eval_cfg: EvalConfig, device: torch.device,
                       progress: bool = False, desc: str = "evaluate"
                       ) -> tuple[dict[str, ConfusionMatrix], torch.Tensor]:
    """The evaluation loop: one segmenter forward pass per batch, labelled by every head.

    emb: (V, D) text embeddings of the vocabulary; vocab_ids: (V,) its dataset ids. ``heads``
    maps a result name to (inference path, protocol); heads sharing a path share its work.
    Returns {name: ConfusionMatrix (summed over ranks)} and the (4,) no-object vote counts of
    :func:`_background_counts` (zeros unless the first head's model has a background column and
    no sliding window is used).
    """
    ignore = label_ignore_index(class_info)
    groups: dict[int, tuple[Any, list[tuple[str, str]]]] = {}
    for name, (path, protocol) in heads.items():
        groups.setdefault(id(path), (path, []))[1].append((name, protocol))
    count_bg = next(iter(heads.values()))[0].has_background and not eval_cfg.sliding_window
    id_is_seen = torch.tensor([s == "seen" for s in class_info.splits])
    cms = {name: ConfusionMatrix(class_info.num_classes, ignore) for name in heads}
    bg_counts = torch.zeros(4, dtype=torch.int64)  # unseen hits, unseen total, seen hits, total
    loader = DataLoader(_shard(dataset), batch_size=eval_cfg.batch_size, shuffle=False,
                        collate_fn=functools.partial(collate, ignore_index=ignore))
    was_training = model.training
    vocab_on_device = vocab_ids.to(device)
    model.eval()
    try:
        for images, labels, _ in tqdm(loader, desc=desc, disable=not progress, leave=False):
            images, labels = pad_batch(images, labels, ignore_index=ignore)
            images, labels_on_device = images.to(device), labels.to(device)
            size = tuple(labels.shape[-2:])
            outputs = None if eval_cfg.sliding_window else model(images, emb)
            for path, named in groups.values():
                protocols = tuple(dict.fromkeys(p for _, p in named))
                if outputs is None:
                    preds = _sliding_labels(model, images, emb, path, protocols, eval_cfg)
                else:
                    preds = path.labels(outputs, to_unit_rgb(images), size, protocols)
                for name, protocol in named:
                    cms[name].update(vocab_on_device[preds[protocol]], labels_on_device)
            if count_bg:
                bg_counts += _background_counts(outputs, labels, id_is_seen, ignore,
                                                class_info.num_classes)
    finally:
        model.train(was_training)
    for cm in cms.values():
        cm.all_reduce()
    if count_bg and is_dist():
        torch.distributed.all_reduce(bg_counts)
    return cms, bg_counts


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
    probs = sliding_window(path_predictor(model, emb, path, protocols), images,
                           eval_cfg.window_size, eval_cfg.window_stride)  # (B,P*V,H,W)
    return {name: labels_from_probs(p, path.seen_positions, path.calibration_for(name))
            for name, p in zip(protocols, probs.chunk(len(protocols), dim=1), strict=True)}


def _pct(hits: torch.Tensor, total: torch.Tensor) -> float:
    return 100.0 * float(hits) / float(total) if int(total) else float("nan")
