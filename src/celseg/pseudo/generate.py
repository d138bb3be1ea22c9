"""Write unseen-class pseudo labels for a training split, in the dataset layout.

The labelling rule (shared by the VLM pseudo labels and the self-training relabel): start from the
zero-shot view of the true training label (unseen ids set to 255). On every pixel that is 255 in
that view (unseen pixels AND originally unlabelled pixels), write the argmax class of the dense
probabilities over ALL classes when it is an unseen class and its probability is >= threshold.
Seen labels are kept; every other pixel stays 255. The output ``OUT/NAME.png`` (uint8 'L') has the
same name as ``annotations/SPLIT/NAME.png`` so the folder can be used as ``data.label_dir``.
``OUT/report.json`` holds the precision / recall of the pseudo labels against the true labels
(see ``celseg.pseudo.report``) and the settings that produced them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from celseg.data.classes import load_classes
from celseg.data.dataset import SegmentationDataset
from celseg.errors import DataError
from celseg.io.atomic import save_image, write_json
from celseg.pseudo import dense
from celseg.pseudo.report import PseudoLabelStats, summarize
from celseg.vlm.cache import text_embeddings

ScoreFn = Callable[[Tensor], Tensor]  # images (1, 3, H, W) in [0, 1] -> probs (1, C, H, W)


def check_out_dir(data_root: str | Path, out_dir: str | Path) -> None:
    """Refuse an output folder that would overwrite the dataset's own images or annotations."""
    root = Path(data_root).resolve()
    out = Path(out_dir).resolve()
    for protected in (root / "annotations", root / "images"):
        if out == protected or protected in out.parents:
            raise DataError(f"refusing to write pseudo labels into {out_dir}: it is inside the "
                            f"dataset's own {protected.name}/ folder ({protected}); choose another "
                            "--out")
    if out == root:
        raise DataError(f"refusing to write pseudo labels into the dataset root {out_dir}; "
                        "choose another --out")


def apply_rule(zs_label: Tensor, probs: Tensor, unseen_ids: list[int],
               threshold: float | Tensor, ignore_index: int = 255) -> Tensor:
    """The labelling rule of the module docstring.

    zs_label: (H, W) long, the zero-shot view (unseen ids already 255); probs: (C, H, W) class
    probabilities over all classes; threshold: a float, or (C,) per-class thresholds. Returns
    (H, W) long.
    """
    conf, pred = probs.max(dim=0)
    unseen = torch.as_tensor(unseen_ids, dtype=torch.long, device=pred.device)
    if isinstance(threshold, Tensor):
        threshold = threshold.to(conf)[pred]
    write = (zs_label == ignore_index) & torch.isin(pred, unseen) & (conf >= threshold)
    return torch.where(write, pred, zs_label)


HIST_BINS = 1000


def candidate_histogram(zs_label: Tensor, probs: Tensor, num_classes: int,
                        ignore_index: int = 255) -> Tensor:
    """(C, HIST_BINS) counts of the argmax confidence of every pixel the rule may write
    (255 in the zero-shot view), by predicted class."""
    conf, pred = probs.max(dim=0)
    cand = zs_label == ignore_index
    bins = (conf[cand].clamp(0, 1) * (HIST_BINS - 1)).round().long()
    flat = pred[cand] * HIST_BINS + bins
    return torch.bincount(flat, minlength=num_classes * HIST_BINS).view(num_classes, HIST_BINS)


def class_balanced_thresholds(hist: Tensor, share: float, threshold: float) -> Tensor:
    """(C,) thresholds of class-balanced self-training (Zou et al., CBST).

    t_c = min(threshold, the confidence above which the top ``share`` of the candidate pixels
    predicted as c lie), so a pixel is written when it passes the global threshold OR is among
    its class's most confident; a class with no candidate pixel keeps ``threshold``.
    """
    out = torch.full((hist.shape[0],), float(threshold))
    for c in range(hist.shape[0]):
        total = int(hist[c].sum())
        if total == 0:
            continue
        # highest bin b such that at least share*total pixels lie at or above it
        above = hist[c].flip(0).cumsum(0).flip(0)  # above[b] = pixels with bin >= b
        ok = (above >= share * total).nonzero()
        b = int(ok.max()) if len(ok) else 0
        out[c] = min(float(threshold), b / (HIST_BINS - 1))
    return out


def zero_shot_view(label: Tensor, unseen_ids: list[int], ignore_index: int = 255) -> Tensor:
    """label: (H, W) long with all true ids. Returns a copy with unseen ids set to ignore."""
    unseen = torch.as_tensor(unseen_ids, dtype=torch.long, device=label.device)
    return label.masked_fill(torch.isin(label, unseen), ignore_index)


def write_labels(score_fn: ScoreFn, data_root: str | Path, out_dir: str | Path, threshold: float,
                 split: str = "train", progress: bool = True, max_items: int = 0,
                 settings: dict | None = None, desc: str = "pseudo labels",
                 class_share: float = 0.0) -> dict:
    """Apply the labelling rule with ``score_fn`` to every image of ``split``; write PNGs + report.

    score_fn: images (1, 3, H, W) in [0, 1] -> class probabilities (1, C, H, W) over all classes
    of the dataset, in id order. ``class_share`` > 0 adds class-balanced thresholds
    (:func:`class_balanced_thresholds`, one extra pass over the split). Returns the report dict
    (also written to ``OUT/report.json``).
    """

    check_out_dir(data_root, out_dir)
    if not 0.0 <= threshold <= 1.0:
        raise DataError(f"threshold must be in [0, 1], got {threshold}")
    if not 0.0 <= class_share <= 1.0:
        raise DataError(f"class share must be in [0, 1], got {class_share}")
    dataset = SegmentationDataset(data_root, split, view="full", max_items=max_items)
    info = dataset.class_info
    unseen = info.unseen_ids
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def items(pass_desc: str):
        for i in tqdm(range(len(dataset)), desc=pass_desc, disable=not progress, unit="img"):
            image, label = dataset.load(i)  # (H, W, 3) uint8, (H, W) int64 true ids (checked)
            name = dataset.samples[i][0].stem
            label = torch.from_numpy(label)
            image01 = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255.0)[None]
            probs = score_fn(image01)[0].float().cpu()  # (C, H, W)
            if probs.shape != (info.num_classes, *label.shape):
                raise DataError(f"{name}: class probabilities of shape {tuple(probs.shape)}, "
                                f"expected {(info.num_classes, *label.shape)}")
            yield name, label, zero_shot_view(label, unseen, info.ignore_index), probs

    thresholds: float | Tensor = threshold
    if class_share > 0:
        hist = torch.zeros(info.num_classes, HIST_BINS, dtype=torch.long)
        for _, _, zs, probs in items(f"{desc} (class thresholds)"):
            hist += candidate_histogram(zs, probs, info.num_classes, info.ignore_index)
        thresholds = class_balanced_thresholds(hist, class_share, threshold)
    stats = PseudoLabelStats(info.num_classes, info.ignore_index)
    for name, label, zs, probs in items(desc):
        pseudo = apply_rule(zs, probs, unseen, thresholds, info.ignore_index)
        save_image(Image.fromarray(pseudo.numpy().astype(np.uint8)), out / f"{name}.png")
        stats.update(pseudo, label)
    report = summarize(stats.matrix, info)
    report["images"] = len(dataset)
    report["settings"] = {"data": str(data_root), "split": split, "threshold": threshold,
                          "class_share": class_share, **(settings or {})}
    if isinstance(thresholds, Tensor):
        report["class_thresholds"] = {info.names[c]: round(float(thresholds[c]), 4)
                                      for c in unseen}
    write_json(out / "report.json", report)
    return report


def pseudo_label(
    vlm: torch.nn.Module,
    data_root: str | Path,
    out_dir: str | Path,
    threshold: float = 0.5,
    *,
    split: str = "train",
    temperature: float = dense.DEFAULT_TEMPERATURE,
    key_smoothing: bool = False,
    smoothing_k: int = dense.DEFAULT_SMOOTHING_K,
    smoothing_tau: float = dense.DEFAULT_SMOOTHING_TAU,
    prompt_denoising: bool = False,
    denoise_threshold: float = dense.DEFAULT_DENOISE_THRESHOLD,
    templates: list[str] | None = None,
    cache_dir: str | Path | None = None,
    text_emb: Tensor | None = None,
    progress: bool = True,
    max_items: int = 0,
) -> dict:
    """Pseudo labels from a VLM's dense predictions over all class names (MaskCLIP+ style).

    vlm: a ``VisionLanguageModel``; its device is used for the images. ``text_emb`` (C, D) skips
    the text encoder (class embeddings in id order); otherwise the class names of the dataset are
    encoded with ``templates`` (None: the VLM's default prompt ensemble) through the disk cache.
    The dense options are those of ``celseg.pseudo.dense``. Returns the report dict.
    """

    info = load_classes(data_root)
    if text_emb is None:

        text_emb = text_embeddings(vlm, list(info.names), templates, cache_dir=cache_dir)
    if text_emb.shape[0] != info.num_classes:
        raise DataError(f"text embeddings for {text_emb.shape[0]} classes, dataset has "
                        f"{info.num_classes}")
    param = next(iter(vlm.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    text_emb = text_emb.to(device)
    options = dict(temperature=temperature, key_smoothing=key_smoothing, smoothing_k=smoothing_k,
                   smoothing_tau=smoothing_tau, prompt_denoising=prompt_denoising,
                   denoise_threshold=denoise_threshold)
    was_training = vlm.training
    vlm.eval()

    def score_fn(images: Tensor) -> Tensor:
        return dense.dense_probs(vlm, images.to(device), text_emb, **options)

    try:
        settings = {"source": "vlm", "vlm": getattr(vlm, "name", type(vlm).__name__), **options}
        return write_labels(score_fn, data_root, out_dir, threshold, split, progress, max_items,
                            settings)
    finally:
        vlm.train(was_training)
