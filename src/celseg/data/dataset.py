"""``SegmentationDataset``: reads the project layout (``images/SPLIT``, ``annotations/SPLIT``,
``classes.json``) into ``(image, label, meta)`` with checks that name the bad file and value."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from celseg.data.batching import MAX_LABEL, label_ignore_index
from celseg.data.classes import ClassInfo, load_classes
from celseg.data.transforms import normalize
from celseg.errors import DataError
from celseg.io.images import open_image, open_rgb

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
VIEWS = ("full", "zero_shot")
def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; a missing, unreadable or oversized file raises DataError naming it."""
    return np.asarray(open_rgb(path))


def read_label(path: Path) -> np.ndarray:
    """(H, W) int64 class ids from a single-channel PNG ('L', 'P' or 16/32-bit integer)."""
    im = open_image(path, "label")
    if im.mode not in ("L", "P", "I", "I;16"):
        raise DataError(f"label {path} has mode {im.mode!r}; expected a single-channel "
                        "PNG of class ids ('L' or 'P')")
    return np.asarray(im).astype(np.int64)


class SegmentationDataset(Dataset):
    """Images and class-id labels of one split.

    ``__getitem__`` returns ``(image (3, H, W) float normalised, label (H, W) long,
    meta dict(name, path, size=(H, W) of the file))``. ``transform`` is a paired transform
    ending in normalisation (``build_train_transform`` / ``build_eval_transform``); without
    one the image is only normalised. ``view="zero_shot"`` maps unseen ids to ignore.
    Labels may be 8-bit or 16-bit PNGs; the file's ignore value (``class_info.ignore_index``)
    becomes ``self.ignore_index``: 255 for <= 255 classes, else ``class_info.ignore_index``
    (see :func:`celseg.data.batching.label_ignore_index`); batch with
    ``celseg.data.batching.collate(..., ignore_index=...)``.
    With ``skip_bad`` a bad sample is counted in ``skipped`` (reasons in ``bad``) and the next
    good one is returned; the count is per process when DataLoader workers are used.
    """

    def __init__(
        self, root: str | Path, split: str, transform: Callable | None = None,
        view: str = "full", label_dir: str | Path | None = None, skip_bad: bool = False,
        max_items: int = 0, class_info: ClassInfo | None = None,
    ):
        if view not in VIEWS:
            raise DataError(f"unknown dataset view {view!r}; expected one of {VIEWS}")
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.view = view
        self.skip_bad = skip_bad
        self.class_info = class_info if class_info is not None else load_classes(self.root)
        self.image_dir = self.root / "images" / split
        self.label_dir = Path(label_dir) if label_dir else self.root / "annotations" / split
        if not self.image_dir.is_dir():
            raise DataError(f"image folder not found: {self.image_dir}")
        if not self.label_dir.is_dir():
            raise DataError(f"label folder not found: {self.label_dir}")
        self.skipped = 0
        self.bad: list[str] = []
        self._bad_index: set[int] = set()
        samples = []
        for path in sorted(self.image_dir.iterdir()):
            if path.suffix.lower() not in IMAGE_EXTS:
                continue
            label = self.label_dir / f"{path.stem}.png"
            if not label.is_file():
                self._reject(DataError(f"label file not found for image {path}: {label}"))
                continue
            samples.append((path, label))
        if max_items > 0:
            samples = samples[:max_items]
        if not samples:
            raise DataError(f"no usable samples in {self.image_dir} (labels in {self.label_dir})")
        self.samples = samples
        self.ignore_index = label_ignore_index(self.class_info)
        self.lut = self._build_lut()

    def _build_lut(self) -> np.ndarray:
        """(256,) int64 id map (65536 entries when the classes or the file's ignore value do not
        fit 8 bits): valid ids to themselves (unseen to ignore in the zero-shot view), the file's
        ignore value to ``self.ignore_index``, everything else to -1 (an error)."""
        ci = self.class_info
        file_ignore = int(ci.ignore_index)
        size = 256 if max(ci.num_classes - 1, file_ignore) <= 255 else MAX_LABEL + 1
        if ci.num_classes > size or not 0 <= file_ignore < size:
            raise DataError(f"{ci.num_classes} classes with ignore {file_ignore} do not fit "
                            "8- or 16-bit label PNGs")
        lut = np.full(size, -1, dtype=np.int64)
        lut[: ci.num_classes] = np.arange(ci.num_classes)
        lut[file_ignore] = self.ignore_index
        if self.view == "zero_shot":
            lut[ci.unseen_ids] = self.ignore_index
        return lut

    def _reject(self, err: DataError) -> None:
        if not self.skip_bad:
            raise err
        self.skipped += 1
        self.bad.append(str(err))

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Checked raw sample: (H, W, 3) uint8 image, (H, W) int64 label after the view's map."""
        image_path, label_path = self.samples[index]
        image = read_image(image_path)
        raw = read_label(label_path)
        if raw.shape != image.shape[:2]:
            raise DataError(f"label {label_path} has size {raw.shape[1]}x{raw.shape[0]} but "
                            f"image {image_path} has {image.shape[1]}x{image.shape[0]} (WxH)")
        out_of_range = (raw < 0) | (raw >= len(self.lut))
        if out_of_range.any():
            raise DataError(f"label {label_path} holds id {int(raw[out_of_range][0])} outside "
                            f"0..{len(self.lut) - 1}")
        label = self.lut[raw]
        if (label < 0).any():
            bad = np.unique(raw[label < 0]).tolist()
            raise DataError(f"label {label_path} holds class id(s) {bad[:10]} not in "
                            f"classes.json ({self.class_info.num_classes} classes, ignore "
                            f"{self.class_info.ignore_index})")
        return image, label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        n = len(self.samples)
        for attempt in range(n):
            i = (index + attempt) % n
            if i in self._bad_index:
                continue
            try:
                image, label = self.load(i)
            except DataError as err:
                if not self.skip_bad:
                    raise
                self._bad_index.add(i)
                self._reject(err)
                continue
            return self._finish(i, image, label)
        raise DataError(f"every sample of {self.image_dir} is bad: {self.bad[:3]}")

    def _finish(self, i: int, image: np.ndarray, label: np.ndarray):
        path = self.samples[i][0]
        meta = {"name": path.stem, "path": str(path), "size": tuple(label.shape)}
        img = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0
        lbl = torch.from_numpy(label)
        if self.transform is not None:
            img, lbl = self.transform(img, lbl)
        else:
            img = normalize(img)
        return img, lbl, meta

