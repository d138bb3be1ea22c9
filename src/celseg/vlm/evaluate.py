"""Zero-shot evaluation of a VLM without any segmentation training.

(a) classification of held-out caption images (``split == "val"``) into their main class among
all class names, seen and unseen separately; (b) training-free dense segmentation, the labels
``celseg predict --vlm`` gives (``celseg.vlm.training_free``), scored with
``celseg.evaluation.metrics``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from celseg.data.classes import ClassInfo
from celseg.data.dataset import read_label
from celseg.errors import DataError
from celseg.evaluation.metrics import ConfusionMatrix, summarize
from celseg.vlm.base import VisionLanguageModel
from celseg.vlm.pretrain import load_image, read_captions
from celseg.vlm.training_free import TrainingFreeSegmenter


def main_class(class_ids: list[int], info: ClassInfo) -> int | None:
    """The one thing a caption image shows, else its one stuff class; None if ambiguous."""
    things = [c for c in class_ids if info.kinds[c] == "thing"]
    if len(things) == 1:
        return things[0]
    stuff = [c for c in class_ids if info.kinds[c] == "stuff"]
    if not things and len(stuff) == 1:
        return stuff[0]
    return None


@torch.no_grad()
def classify_captions(vlm: VisionLanguageModel, data: str | Path, info: ClassInfo,
                      text_emb: torch.Tensor, batch_size: int = 32,
                      image_size: int | None = None) -> dict:
    """Top-1 accuracy (%) on caption-val images whose main class is unambiguous."""
    entries = read_captions(data, "val")
    items = [(e["image"], main_class(list(e.get("class_ids", [])), info)) for e in entries]
    kept = [(p, c) for p, c in items if c is not None]
    correct = {"seen": 0, "unseen": 0}
    total = {"seen": 0, "unseen": 0}
    for i in range(0, len(kept), batch_size):
        batch = kept[i : i + batch_size]
        images = torch.stack([load_image(p, image_size) for p, _ in batch])
        pred = (vlm.encode_image(images) @ text_emb.to(vlm.device).T).argmax(1).cpu()
        for (_, c), p in zip(batch, pred.tolist(), strict=True):
            total[info.splits[c]] += 1
            correct[info.splits[c]] += int(p == c)

    def acc(s: str) -> float:
        return 100.0 * correct[s] / total[s] if total[s] else float("nan")

    n = total["seen"] + total["unseen"]
    return {"acc_seen": acc("seen"), "acc_unseen": acc("unseen"),
            "acc_all": 100.0 * (correct["seen"] + correct["unseen"]) / n if n else float("nan"),
            "n_seen": total["seen"], "n_unseen": total["unseen"],
            "skipped_ambiguous": len(items) - len(kept)}


def _pairs(root: Path, split: str, max_images: int) -> list[tuple[Path, Path]]:
    img_dir, ann_dir = root / "images" / split, root / "annotations" / split
    if not img_dir.is_dir():
        raise DataError(f"no image folder {img_dir}")
    pairs = []
    for img in sorted(img_dir.iterdir()):
        if img.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            continue
        ann = ann_dir / f"{img.stem}.png"
        if not ann.is_file():
            raise DataError(f"no annotation {ann} for image {img}")
        pairs.append((img, ann))
        if max_images and len(pairs) >= max_images:
            break
    if not pairs:
        raise DataError(f"no images in {img_dir}")
    return pairs


@torch.no_grad()
def dense_segmentation(vlm: VisionLanguageModel, data: str | Path, info: ClassInfo,
                       text_emb: torch.Tensor, split: str = "val", max_images: int = 0,
                       progress: bool = False) -> dict:
    """Training-free segmentation of ``split``; returns ``metrics.summarize`` output."""
    from tqdm import tqdm

    segmenter = TrainingFreeSegmenter(vlm)
    cm = ConfusionMatrix(info.num_classes, info.ignore_index)
    for img_path, ann_path in tqdm(_pairs(Path(data), split, max_images), desc="dense eval",
                                   disable=not progress):
        image = load_image(str(img_path))[None]
        label = torch.from_numpy(read_label(ann_path))
        if tuple(image.shape[-2:]) != tuple(label.shape):
            raise DataError(f"annotation {ann_path} is {tuple(label.shape)} but image "
                            f"{img_path} is {tuple(image.shape[-2:])} (H, W)")
        pred = segmenter.probs_from_text(image, text_emb).argmax(1)[0].cpu()
        cm.update(pred, label)
    return summarize(cm.matrix, info)
