"""The generated zero-shot benchmark: coloured shapes ("things") on textured "stuff".

Class names are natural language ("red circle", "brick wall") and every unseen class shares
attributes with seen ones (``synthetic_classes.json``), so text embeddings of the names carry
the relations a zero-shot model must transfer. Every sample is a pure function of
``(seed, split, index)``: generation is deterministic and could run in any order or process.

Layout written by :func:`generate` (see docs/CONTRACTS.md)::

    OUT/classes.json
    OUT/images/{train,val}/NAME.png         RGB
    OUT/annotations/{train,val}/NAME.png    'L' class ids
    OUT/captions/images/NAME.png            caption split
    OUT/captions/captions.jsonl
"""

from __future__ import annotations

import colorsys
import json
import shutil
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from celseg.data.classes import ClassInfo, load_classes
from celseg.data.synth_shapes import shape_mask
from celseg.data.synth_textures import pattern, tint
from celseg.errors import DataError

SPEC_FILE = Path(__file__).with_name("synthetic_classes.json")
# the worlds of names: "" is the first dataset, "ov" the second one (open-vocabulary transfer)
SPEC_FILES = {"": SPEC_FILE, "ov": SPEC_FILE.with_name("synthetic_ov_classes.json")}
SPLIT_CODES = {"train": 0, "val": 1, "captions": 2}
DATASET_NAME = "synthetic-shapes"


@dataclass(frozen=True)
class SyntheticSpec:
    """The class table: things (colour x shape) first, then stuff; ids follow this order."""

    things: tuple[dict, ...]
    stuff: tuple[dict, ...]
    colors: dict
    hue_jitter: float
    name: str = DATASET_NAME
    stream: tuple[int, ...] = ()  # appended to every random-stream key (empty: the first world)

    @property
    def num_things(self) -> int:
        return len(self.things)

    @property
    def num_stuff(self) -> int:
        return len(self.stuff)

    def stuff_id(self, j: int) -> int:
        return self.num_things + j


@lru_cache(maxsize=4)
def load_spec(variant: str = "") -> SyntheticSpec:
    if variant not in SPEC_FILES:
        raise DataError(f"unknown synthetic variant {variant!r}; known: "
                        f"{', '.join(repr(v) for v in SPEC_FILES)}")
    raw = json.loads(SPEC_FILES[variant].read_text())
    return SyntheticSpec(tuple(raw["things"]), tuple(raw["stuff"]), raw["colors"],
                         float(raw["hue_jitter"]), raw.get("name", DATASET_NAME),
                         tuple(raw.get("stream", ())))


def class_info(variant: str = "") -> ClassInfo:
    """The benchmark's classes: 16 coloured shapes, then 8 stuff textures; 6 unseen.

    ``variant="ov"``: the second world, 18 shapes then 6 stuff; "unseen" marks the 16 names
    the first world does not have."""
    spec = load_spec(variant)
    entries = list(spec.things) + list(spec.stuff)
    return ClassInfo(
        names=tuple(e["name"] for e in entries),
        splits=tuple(e["split"] for e in entries),
        kinds=("thing",) * spec.num_things + ("stuff",) * spec.num_stuff,
        colors=tuple(tuple(int(c) for c in e["palette"]) for e in entries),
        ignore_index=255,
        dataset_name=spec.name,
    )


# ---------------------------------------------------------------------------------------------
# rendering


def _rng(seed: int, split: str, index: int, stream: tuple[int, ...] = ()) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_CODES[split], index, *stream])


def _deck(seed: int, split: str, what: int, n: int, position: int,
          stream: tuple[int, ...] = ()) -> int:
    """Balanced draw: position k of an endless sequence of shuffled decks of ``n`` cards."""
    cycle, k = divmod(position, n)
    key = [seed, SPLIT_CODES[split], 1_000_003, what, cycle, *stream]
    perm = np.random.default_rng(key).permutation(n)
    return int(perm[k])


def thing_color(spec: SyntheticSpec, color: str, rng: np.random.Generator) -> np.ndarray:
    """A jittered RGB (3,) in [0, 1] around the named colour's hue."""
    c = spec.colors[color]
    hue = (c["hue"] + rng.uniform(-spec.hue_jitter, spec.hue_jitter)) % 360
    sat = rng.uniform(*c["sat"])
    val = rng.uniform(*c["val"])
    return np.array(colorsys.hsv_to_rgb(hue / 360.0, sat, val), dtype=np.float32)


def stuff_rgb(entry: dict, rng: np.random.Generator) -> np.ndarray:
    base = np.asarray(entry["tint"], dtype=np.float32) / 255.0
    return np.clip(base * rng.uniform(0.85, 1.15) * rng.uniform(0.93, 1.07, 3), 0, 1)


def stuff_layer(spec: SyntheticSpec, j: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) float32 texture of stuff class ``j`` (index into ``spec.stuff``)."""
    entry = spec.stuff[j]
    contrast = entry["contrast"] * rng.uniform(0.8, 1.2)
    return tint(pattern(entry["texture"], size, rng), stuff_rgb(entry, rng), contrast)


def stuff_regions(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Partition the image into ``n`` regions: (size, size) int array with values 0..n-1.

    A Voronoi diagram of well-spread centres on a sinusoidally warped grid: wavy borders,
    every region non-empty (each centre lies in its own cell up to the small warp).
    """
    if n == 1:
        return np.zeros((size, size), dtype=np.int64)
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = t[:, None], t[None, :]
    amp, freq, phase = rng.uniform(0.02, 0.07, 2), rng.uniform(1.0, 3.0, 2), rng.uniform(0, 6.3, 2)
    wy = y + amp[0] * np.sin(2 * np.pi * freq[0] * x + phase[0])
    wx = x + amp[1] * np.sin(2 * np.pi * freq[1] * y + phase[1])
    # centres on a jittered ring keep cells of comparable size
    a = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(n) / n + rng.uniform(-0.3, 0.3, n)
    r = rng.uniform(0.25, 0.45, n)
    cy, cx = 0.5 + r * np.sin(a), 0.5 + r * np.cos(a)
    d = (wy[None] - cy[:, None, None]) ** 2 + (wx[None] - cx[:, None, None]) ** 2
    return d.argmin(axis=0)


def paint_thing(
    spec: SyntheticSpec, image: np.ndarray, label: np.ndarray, cls: int, cy: float, cx: float,
    radius: float, angle: float, rng: np.random.Generator, aspect: float = 1.0,
) -> int:
    """Paint thing class ``cls`` in place on image (H, W, 3) float and label (H, W) uint8.

    Returns the number of pixels painted. The colour is jittered around the class colour and
    shaded with a linear gradient and mild noise, so the object is not a flat patch.
    """
    entry = spec.things[cls]
    hit = shape_mask(entry["shape"], cy, cx, radius, angle, image.shape[0], aspect)
    if hit is None:
        return 0
    rows, cols, mask = hit
    rgb = thing_color(spec, entry["color"], rng)
    h, w = mask.shape
    g = rng.uniform(-1, 1, 2) * (0.18 / max(radius, 1.0))
    ramp = (1.0 + g[0] * (np.arange(h, dtype=np.float32)[:, None] - h / 2)
            + g[1] * (np.arange(w, dtype=np.float32)[None, :] - w / 2))
    noise = 1.0 + 0.04 * rng.standard_normal((h, w), dtype=np.float32)
    patch = np.clip(rgb[None, None, :] * (ramp * noise)[..., None], 0.0, 1.0)
    np.copyto(image[rows, cols], patch, where=mask[..., None])
    label[rows, cols][mask] = cls
    return int(mask.sum())


def render_segmentation(seed: int, split: str, index: int, size: int,
                        variant: str = "") -> tuple[np.ndarray, np.ndarray]:
    """One benchmark image: (size, size, 3) uint8 RGB and (size, size) uint8 class ids.

    1-3 stuff regions cover the image; 1-6 things of random class, size (diameter 10-40% of
    the image), rotation, aspect and colour are painted in turn, later ones occluding earlier
    ones. Two things and the first stuff class come from balanced decks per split, so every
    class (seen or unseen) appears in a split as soon as it has a handful of images.
    """
    spec = load_spec(variant)
    rng = _rng(seed, split, index, spec.stream)
    n_stuff = int(rng.choice([1, 2, 3], p=[0.25, 0.45, 0.3]))
    first = _deck(seed, split, 0, spec.num_stuff, index, spec.stream)
    others = [j for j in rng.permutation(spec.num_stuff) if j != first][: n_stuff - 1]
    chosen = [first] + [int(j) for j in others]
    regions = stuff_regions(n_stuff, size, rng)
    image = stuff_layer(spec, chosen[0], size, rng)
    label = np.full((size, size), spec.stuff_id(chosen[0]), dtype=np.uint8)
    for r, j in enumerate(chosen[1:], start=1):
        sel = regions == r
        np.copyto(image, stuff_layer(spec, j, size, rng), where=sel[..., None])
        label[sel] = spec.stuff_id(j)

    n_things = int(rng.integers(1, 7))
    deck = [_deck(seed, split, 1, spec.num_things, 2 * index + k, spec.stream) for k in range(2)]
    classes = [int(c) for c in rng.integers(0, spec.num_things, max(n_things - 2, 0))]
    classes += deck[: n_things]  # deck objects are painted last (on top)
    placed = []
    for cls in classes:
        radius = size * rng.uniform(0.05, 0.2)
        cy, cx = rng.uniform(0.05, 0.95, 2) * size
        angle = rng.uniform(0, 2 * np.pi)
        aspect = rng.uniform(0.85, 1.15)
        paint_thing(spec, image, label, cls, cy, cx, radius, angle, rng, aspect)
        placed.append((cls, cy, cx, radius, angle, aspect))
    # a deck object fully hidden by the other one is stamped again on top
    for cls, cy, cx, radius, angle, aspect in placed[-len(deck[:n_things]):]:
        if not (label == cls).any():
            paint_thing(spec, image, label, cls, cy, cx, radius, angle, rng, aspect)

    image += 0.015 * rng.standard_normal(image.shape, dtype=np.float32)
    return _to_uint8(image), label


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


CAPTION_ONE = ("{a} {t} {p}", "a photo of {a} {t} {p}", "{a} {t} {p}", "{t} {p}",
               "a picture of {a} {t} {p}")
CAPTION_TWO = ("{a} {t} and {a2} {t2} {p}", "a photo of {a} {t} and {a2} {t2} {p}")
CAPTION_STUFF = ("a photo of {n}", "{n}", "a texture of {n}", "a close-up of {n}")


def render_caption(seed: int, index: int, size: int,
                   variant: str = "") -> tuple[np.ndarray, str, list[int]]:
    """One caption sample: (size, size, 3) uint8 image, its caption and the ids it shows.

    One stuff texture fills the image. One sample in ten shows only the stuff, two in ten
    show two things, the rest one large thing (diameter 40-75% of the image). Things and
    stuff are drawn from balanced decks, so all classes, seen and unseen, appear evenly.
    """
    spec = load_spec(variant)
    rng = _rng(seed, "captions", index, spec.stream)
    j = _deck(seed, "captions", 0, spec.num_stuff, index, spec.stream)
    image = stuff_layer(spec, j, size, rng)
    label = np.full((size, size), spec.stuff_id(j), dtype=np.uint8)
    stuff = spec.stuff[j]
    kind = index % 10
    if kind == 0:
        caption = str(rng.choice(CAPTION_STUFF)).format(n=stuff["noun"])
        return _to_uint8(image), caption, [spec.stuff_id(j)]

    n_obj = 2 if kind in (3, 7) else 1
    # the thing deck counts only object slots, so thing classes stay balanced
    slot = index - index // 10 - 1
    things = [_deck(seed, "captions", 1, spec.num_things, slot, spec.stream)]
    if n_obj == 2:
        things.append(int(rng.choice([c for c in range(spec.num_things) if c != things[0]])))
    if len(things) == 1:
        radius = size * rng.uniform(0.2, 0.375)
        centres = [rng.uniform(0.4, 0.6, 2) * size]
    else:
        radius = size * rng.uniform(0.14, 0.2)
        side = rng.permutation([0.27, 0.73])
        centres = [np.array([rng.uniform(0.3, 0.7), side[k]]) * size for k in range(2)]
    for cls, (cy, cx) in zip(things, centres, strict=True):
        paint_thing(spec, image, label, cls, cy, cx, radius * rng.uniform(0.9, 1.1),
                    rng.uniform(0, 2 * np.pi), rng, rng.uniform(0.9, 1.1))
    image += 0.015 * rng.standard_normal(image.shape, dtype=np.float32)
    names = [spec.things[c]["name"] for c in things]
    if len(names) == 1:
        caption = str(rng.choice(CAPTION_ONE)).format(a=_article(names[0]), t=names[0],
                                                      p=stuff["phrase"])
    else:
        caption = str(rng.choice(CAPTION_TWO)).format(
            a=_article(names[0]), t=names[0], a2=_article(names[1]), t2=names[1],
            p=stuff["phrase"])
    present = sorted({int(v) for v in np.unique(label)})
    return _to_uint8(image), caption, present


# ---------------------------------------------------------------------------------------------
# writing


def _save_png(array: np.ndarray, path: Path) -> None:
    from celseg.io.atomic import save_image

    # compress_level 1: PNG stays lossless, encoding is ~4x faster than the default
    save_image(Image.fromarray(array), path, compress_level=1)


def _prepare_out(out: Path) -> None:
    """Refuse to write into a non-empty folder that is not a synthetic dataset; clear old one."""
    from celseg.io.outputs import MANIFEST

    if out.exists() and any(p.name != MANIFEST for p in out.iterdir()):
        cls_file = out / "classes.json"
        names = {load_spec(v).name for v in SPEC_FILES}
        if not cls_file.is_file() or load_classes(cls_file).dataset_name not in names:
            raise DataError(f"output folder {out} is not empty and holds no synthetic dataset; "
                            "choose an empty or new folder")
        for sub in ("images", "annotations", "captions"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _write_segmentation(job: tuple[int, str, int, int, str, str]) -> list[int]:
    seed, split, index, size, out, variant = job
    image, label = render_segmentation(seed, split, index, size, variant)
    name = f"{split}_{index:05d}.png"
    _save_png(image, Path(out) / "images" / split / name)
    _save_png(label, Path(out) / "annotations" / split / name)
    return np.unique(label).tolist()


def _write_caption(job: tuple[int, str, int, int, str, str]) -> dict:
    seed, split, index, size, out, variant = job
    image, caption, ids = render_caption(seed, index, size, variant)
    name = f"cap_{index:05d}.png"
    _save_png(image, Path(out) / "captions" / "images" / name)
    return {"image": f"images/{name}", "caption": caption, "class_ids": ids, "split": split}


def generate(
    out: str | Path, seed: int = 0, n_train: int = 1200, n_val: int = 300, size: int = 128,
    n_captions: int = 3000, workers: int = 1, progress: bool = False, variant: str = "",
) -> dict:
    """Write the benchmark to ``out``; return statistics.

    ``variant``: "" the first dataset, "ov" the second world of names (same layout).

    The output does not depend on ``workers`` (every sample is a function of its index).
    Returns a dict with ``out``, ``num_classes``, ``unseen`` (names), ``train``, ``val``,
    ``captions`` (counts), ``images_per_class`` ({split: {name: number of images}}),
    ``seconds`` and ``images_per_s`` (all images, captions included).
    """
    if size < 32:
        raise DataError(f"--size {size} is too small; use at least 32 pixels")
    if min(n_train, n_val, n_captions) < 0:
        raise DataError(f"image counts must be >= 0, got train={n_train} val={n_val} "
                        f"captions={n_captions}")
    info = class_info(variant)  # an unknown variant fails before anything is written
    out = Path(out)
    _prepare_out(out)
    info.save(out / "classes.json")
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "annotations" / split).mkdir(parents=True, exist_ok=True)
    (out / "captions" / "images").mkdir(parents=True, exist_ok=True)

    n_cap_val = n_captions // 10
    seg_jobs = [(seed, split, i, size, str(out), variant)
                for split, n in (("train", n_train), ("val", n_val)) for i in range(n)]
    cap_jobs = [(seed, "val" if i >= n_captions - n_cap_val else "train", i, size, str(out),
                 variant) for i in range(n_captions)]
    render_segmentation(seed, "train", 0, 32, variant)  # load the texture photos before timing
    start = time.perf_counter()
    bar = _progress(len(seg_jobs) + len(cap_jobs), progress)
    pool = None
    if workers > 1:
        import multiprocessing

        pool = multiprocessing.get_context("fork").Pool(workers)
    run = pool.imap if pool is not None else map
    try:
        counts = {"train": np.zeros(256, np.int64), "val": np.zeros(256, np.int64),
                  "captions": np.zeros(256, np.int64)}
        for job, present in zip(seg_jobs, run(_write_segmentation, seg_jobs), strict=True):
            counts[job[1]][present] += 1
            bar.update(1)
        with open(out / "captions" / "captions.jsonl", "w") as fh:
            for record in run(_write_caption, cap_jobs):
                fh.write(json.dumps(record) + "\n")
                counts["captions"][record["class_ids"]] += 1
                bar.update(1)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        bar.close()
    seconds = time.perf_counter() - start
    total = len(seg_jobs) + len(cap_jobs)
    return {
        "out": str(out),
        "num_classes": info.num_classes,
        "unseen": [info.names[i] for i in info.unseen_ids],
        "train": n_train,
        "val": n_val,
        "captions": n_captions,
        "size": size,
        "seed": seed,
        "variant": variant,
        "images_per_class": {k: {name: int(c[i]) for i, name in enumerate(info.names)}
                             for k, c in counts.items()},
        "seconds": seconds,
        "images_per_s": total / max(seconds, 1e-9),
    }


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="generating", unit="img")


def describe(stats: dict) -> str:
    """The summary ``celseg make-data synthetic`` prints for :func:`generate`'s statistics."""
    total = stats["train"] + stats["val"] + stats["captions"]
    lines = [f"wrote {stats['out']}: {stats['num_classes']} classes "
             f"({len(stats['unseen'])} unseen: {', '.join(stats['unseen'])})",
             f"  train {stats['train']}, val {stats['val']}, captions {stats['captions']} images "
             f"at {stats['size']} px, seed {stats['seed']}",
             f"  {total} images in {stats['seconds']:.1f} s = {stats['images_per_s']:.0f} images/s"]
    train = stats["images_per_class"]["train"]
    if stats["train"]:
        rare = min(train, key=train.get)
        lines.append(f"  training images per class: min {train[rare]} ({rare}), "
                     f"max {max(train.values())}")
    return "\n".join(lines)
