"""Segment many image files into a folder (``celseg predict``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from celseg.api.model import Model

SHARES_FILE = "shares.json"


def segment_files(model: Model, paths: Sequence[Path], names_out: Sequence[str],
                  class_names: list[str], out_dir: str | Path, max_size: int = 0,
                  shares: bool = False, progress: bool = True) -> list[Path]:
    """Write ``OUT/NAME.png`` and ``OUT/NAME_overlay.png`` for each image (``names_out``: one
    distinct NAME per path) and, with ``shares``, ``OUT/shares.json``: the percent of pixels
    per class of every image. Returns the label PNG paths."""
    from tqdm import tqdm

    from celseg.io.atomic import write_json

    written, records = [], []
    items = list(zip(paths, names_out, strict=True))
    for path, name in tqdm(items, desc="segment", unit="img", disable=not progress):
        seg = model.segment(path, class_names, max_size=max_size)
        label_path, _ = seg.save(out_dir, name)
        written.append(label_path)
        records.append({"image": str(path), "labels": label_path.name, "shares": seg.shares()})
    if shares:
        write_json(Path(out_dir) / SHARES_FILE, {"classes": list(class_names), "unit": "percent",
                                                  "images": records})
    return written


def check_outputs(images: Sequence[Path], folders: Sequence[Path], names_out: Sequence[str],
                  out_dir: str | Path, ckpt: str | Path | None, vlm: str | None,
                  shares: bool, overwrite: bool) -> None:
    """Before any model is loaded: every image header readable (size within the pixel limit),
    and no output that would replace an input, land in an input folder, or replace a file
    celseg did not write (unless ``overwrite``). Claims the outputs."""
    from celseg.api.segmentation import output_paths
    from celseg.io.images import image_size
    from celseg.io.outputs import OutputGuard

    for image in images:
        image_size(image)
    guard = OutputGuard("predict", overwrite=overwrite)
    if ckpt is not None:
        guard.read_checkpoint(ckpt)
    guard.read_files(*images).read_dirs(*folders).read_path(vlm)
    files = [p for name in names_out for p in output_paths(out_dir, name)]
    guard.claim(files=files + ([Path(out_dir) / SHARES_FILE] if shares else []))
