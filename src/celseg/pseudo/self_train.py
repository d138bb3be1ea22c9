"""Self-training: relabel the training split with a trained segmenter's own predictions.

The rule is the one of ``celseg.pseudo.generate``: on pixels that are 255 in the zero-shot view of
the true training labels, write the segmenter's argmax when it is an unseen class with confidence
>= threshold; seen labels are kept; the rest stays 255. The base is always the original
annotations, never a previous round's pseudo labels.

Confidence is the segmenter's semantic map normalised over classes::

    S(c, x) = sum_q softmax_c(z_q)[c] * sigmoid(M_q(x))      (celseg.models.inference)
    p(c, x) = S(c, x) / sum_k S(k, x)

computed over ALL class names of the dataset, at the mask resolution (H/4) and upsampled
bilinearly to the image size.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from celseg.pseudo.generate import write_labels


@torch.no_grad()
def segmenter_probs(model: torch.nn.Module, images: Tensor, text_emb: Tensor) -> Tensor:
    """Class probabilities of a segmenter.

    images: (B, 3, H, W) RGB in [0, 1]; text_emb: (C, D) normalised, all classes in id order.
    Normalised images are zero-padded bottom/right to a multiple of the backbone's largest
    stride, as in evaluation, and the result is cropped back. Returns (B, C, H, W) summing to 1
    over C.
    """
    from celseg.data.transforms import normalize
    from celseg.engine.evaluator import pad_batch
    from celseg.models.inference import semantic_probs

    h, w = images.shape[-2:]
    x, _ = pad_batch(normalize(images))
    outputs = model(x, text_emb)
    sem = semantic_probs(outputs["pred_logits"], outputs["pred_masks"], model.has_background)
    sem = F.interpolate(sem.float(), size=tuple(x.shape[-2:]), mode="bilinear",
                        align_corners=False)
    sem = sem[..., :h, :w].clamp_min(0.0)
    return sem / sem.sum(dim=1, keepdim=True).clamp_min(1e-12)


def relabel(model: torch.nn.Module, text_emb: Tensor, data_root: str | Path,
            out_dir: str | Path, threshold: float = 0.5, *, split: str = "train",
            progress: bool = True, max_items: int = 0, settings: dict | None = None) -> dict:
    """Write self-training labels for ``split`` with ``model``; returns the report dict.

    text_emb: (C, D) normalised embeddings of all the dataset's class names in id order, in the
    space the model was trained with.
    """
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    text_emb = text_emb.to(device)
    was_training = model.training
    model.eval()

    def score_fn(images: Tensor) -> Tensor:
        return segmenter_probs(model, images.to(device), text_emb)

    try:
        return write_labels(score_fn, data_root, out_dir, threshold, split, progress, max_items,
                            {"source": "segmenter", **(settings or {})}, desc="self-training")
    finally:
        model.train(was_training)


def relabel_from_checkpoint(ckpt: str | Path, data_root: str | Path, out_dir: str | Path,
                            threshold: float = 0.5, *, split: str = "train",
                            device: str = "cpu", cache_dir: str | Path | None = None,
                            progress: bool = True, max_items: int = 0) -> dict:
    """Load a segmenter checkpoint (and the VLM its config names for the text) and relabel."""
    from celseg.data.classes import load_classes
    from celseg.engine.checkpoint import load_segmenter
    from celseg.vlm.cache import text_embeddings
    from celseg.vlm.registry import load_vlm

    model, cfg = load_segmenter(ckpt, device=device)
    info = load_classes(data_root)
    vlm = load_vlm(cfg.model.vlm, device=device)
    text_emb = text_embeddings(vlm, list(info.names), cache_dir=cache_dir)
    return relabel(model, text_emb, data_root, out_dir, threshold, split=split,
                   progress=progress, max_items=max_items,
                   settings={"checkpoint": str(ckpt), "vlm": cfg.model.vlm})
