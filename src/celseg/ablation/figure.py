"""A figure of trained runs: validation images, their ground truth and each run's labels."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from celseg.ablation.runner import RunRecord
from celseg.data.classes import load_classes
from celseg.data.dataset import SegmentationDataset
from celseg.data.transforms import denormalize
from celseg.engine.predictor import Predictor
from celseg.io.atomic import save_image
from celseg.viz.overlay import legend_image, overlay, panel


def figure(records: list[RunRecord], data_root: str, out_png: Path, n_images: int = 4,
           ensembles: tuple[bool, ...] = (True,)) -> Path:
    """Rows: validation images of ``data_root``; columns: image, ground truth, each variant
    (its first record) under each protocol asked for (``ensembles``: False = the segmenter
    alone, True = the default). The legend marks the classes unseen in ``data_root``."""
    info = load_classes(data_root)
    dataset = SegmentationDataset(data_root, "val", view="full")
    step = max(1, len(dataset) // n_images)
    samples = [dataset[i * step] for i in range(min(n_images, len(dataset)))]
    images = [(denormalize(img).clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
              for img, _, _ in samples]
    columns = [[img, overlay(img, lab.numpy(), info.palette)]
               for img, (_, lab, _) in zip(images, samples, strict=True)]
    titles = ["image", "ground truth"]
    first: dict[str, RunRecord] = {}
    for rec in records:
        first.setdefault(rec.variant.key, rec)
    for (key, rec), ensemble in itertools.product(first.items(), ensembles):
        predictor = Predictor.from_checkpoint(rec.out_dir / "checkpoints" / "last.safetensors",
                                              ensemble=ensemble)
        with torch.no_grad():
            for row, img in zip(columns, images, strict=True):
                label = predictor.segment(img, list(info.names))
                row.append(overlay(img, label, info.palette))
        titles.append(f"{key} ({predictor.protocol})")
    present = sorted({int(v) for _, lab, _ in samples for v in lab.unique().tolist()} - {255})
    legend = legend_image(info.names, info.palette, present, marked=info.unseen_ids,
                          columns=max(1, len(present) // 6 + 1))
    sheet = panel(columns, titles)
    canvas = np.full((sheet.height + legend.shape[0] + 8, max(sheet.width, legend.shape[1]), 3),
                     255, dtype=np.uint8)
    canvas[: sheet.height, : sheet.width] = np.asarray(sheet)
    canvas[sheet.height + 8:, : legend.shape[1]] = legend
    return save_image(Image.fromarray(canvas), out_png)
