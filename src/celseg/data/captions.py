"""The caption split of the synthetic benchmark (``ROOT/captions``), for VLM pretraining.

``captions.jsonl`` holds one record per line: ``{"image": "images/NAME.png", "caption": str,
"class_ids": [int, ...], "split": "train"|"val"}`` with paths relative to ``ROOT/captions``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from celseg.data.dataset import read_image
from celseg.data.transforms import resize_pair
from celseg.errors import DataError


def read_captions(root: str | Path, split: str | None = None) -> list[dict]:
    """Records of ``ROOT/captions/captions.jsonl`` (all, or one split); errors name the line."""
    path = Path(root) / "captions" / "captions.jsonl"
    if not path.is_file():
        raise DataError(f"caption file not found: {path}")
    records = []
    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {n} is not valid JSON: {exc}") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path} line {n} is not a JSON object: {line[:80]!r}")
        missing = {"image", "caption", "class_ids", "split"} - set(rec)
        if missing:
            raise DataError(f"{path} line {n} lacks key(s) {sorted(missing)}")
        if split is None or rec["split"] == split:
            records.append(rec)
    return records


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file; unreadable or binary files raise a DataError naming it."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


class CaptionDataset(Dataset):
    """``(image (3, S, S) float in [0, 1], caption str, class_ids list[int])`` per record.

    Images are resized to ``size`` (0: keep) and not normalised: a VLM normalises itself.
    """

    def __init__(self, root: str | Path, split: str = "train", size: int = 0):
        self.root = Path(root) / "captions"
        self.records = read_captions(root, split)
        if not self.records:
            raise DataError(f"no '{split}' captions in {self.root / 'captions.jsonl'}")
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, list[int]]:
        rec = self.records[index]
        arr = read_image(self.root / rec["image"])
        img = torch.from_numpy(np.array(arr)).permute(2, 0, 1).float() / 255.0
        if self.size > 0:
            img, _ = resize_pair(img, None, (self.size, self.size))
        return img, rec["caption"], list(rec["class_ids"])


def collate_captions(batch: list) -> tuple[torch.Tensor, list[str], list[list[int]]]:
    """(B, 3, S, S) images, captions, class id lists (images must share one size)."""
    return (torch.stack([b[0] for b in batch]), [b[1] for b in batch], [b[2] for b in batch])
