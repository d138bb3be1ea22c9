"""Evaluate a trained run's checkpoint on a labelled split (``celseg evaluate``).

Settings come from the checkpoint's config.yaml; a config file overlays its ``data`` and ``eval``
keys (and its ``base``'s), then ``section.key=value`` overrides (``data.*`` / ``eval.*`` only),
then an explicit dataset root / split. The file's other sections are ignored: the model is the
checkpoint's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from celseg.config import REMOVED_KEYS, Config, apply_overrides, load_config
from celseg.data.classes import ClassInfo, load_classes
from celseg.data.dataset import SegmentationDataset
from celseg.data.transforms import build_eval_transform
from celseg.engine.checkpoint import label_names, load_segmenter
from celseg.engine.distributed import resolve_device
from celseg.engine.evaluator import evaluate
from celseg.errors import CelsegError
from celseg.evaluation.metrics import format_table
from celseg.vlm.loading import class_text_embeddings

EVAL_SECTIONS = ("data", "eval")
EVAL_SECTIONS_PREFIX = tuple(f"{s}." for s in EVAL_SECTIONS)


def overlay_eval_config(cfg: Any, path: str | Path) -> Any:
    """``cfg`` with the ``data`` / ``eval`` keys written in the config file at ``path`` (its
    ``base`` first, then the file) applied; the whole file is validated as a config."""
    path = Path(path)
    file_cfg = load_config(path)  # validates every key (and the base rule)
    raw = yaml.safe_load(path.read_text()) or {}
    layers = []
    if isinstance(raw, dict) and "base" in raw:
        base = yaml.safe_load((path.parent / str(raw["base"])).read_text()) or {}
        layers.append(base)
    layers.append(raw)
    for section in EVAL_SECTIONS:
        keys = [k for layer in layers for k in (layer.get(section) or {})
                if (section, k) not in REMOVED_KEYS]
        if keys:
            values = {k: getattr(getattr(file_cfg, section), k) for k in keys}
            cfg = dataclasses.replace(
                cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)})
    return cfg


def names_to_ids(class_info: Any, names: list[str]) -> tuple[int, ...]:
    """Dataset ids of the ``names`` the dataset has (others are ignored)."""
    wanted = set(names)
    return tuple(i for i, n in enumerate(class_info.names) if n in wanted)


def check_overrides(overrides: list[str], command: str = "evaluate") -> list[str]:
    """``overrides`` unchanged when each sets a ``data.*`` or ``eval.*`` key; else an error
    naming ``command``."""
    for item in overrides:
        if not item.startswith(EVAL_SECTIONS_PREFIX):
            raise CelsegError(f"{command} --set only takes eval.* or data.* keys, got {item!r}")
    return list(overrides)


def evaluate_checkpoint(ckpt: str | Path, config: str | None = None,
                        overrides: list[str] | None = None, data_root: str | None = None,
                        split: str | None = None, vlm: str | None = None,
                        device: str = "auto", max_images: int = 0,
                        progress: bool = True) -> dict:
    """The evaluation summary (:func:`celseg.engine.evaluator.evaluate`) of a checkpoint, with
    ``checkpoint``, ``config`` (when given) and ``data`` recorded. ``vlm`` replaces the run's
    model.vlm (text embeddings and image path; it must share the run's text space)."""
    overrides = check_overrides(overrides or [])
    torch_device = resolve_device(device)
    model, cfg = load_segmenter(ckpt, torch_device)
    if config:
        cfg = overlay_eval_config(cfg, config)
    cfg: Config = apply_overrides(cfg, overrides)  # validated once, after the last one
    if cfg.eval.compile_backbone:
        model.compile_backbone()
    data = dataclasses.replace(cfg.data, root=data_root or cfg.data.root)
    class_info: ClassInfo = load_classes(data.root)
    dataset = SegmentationDataset(
        data.root, split or data.val_split, transform=build_eval_transform(data),
        view="full", max_items=max_images, class_info=class_info,
    )
    text_emb = class_text_embeddings(vlm or cfg.model.vlm, list(class_info.names), torch_device)
    labelled, pseudo = label_names(ckpt, cfg)
    summary = evaluate(model, dataset, text_emb, class_info, cfg.eval, torch_device,
                       progress=progress, vlm=vlm or cfg.model.vlm,
                       labelled_ids=names_to_ids(class_info, labelled),
                       pseudo_ids=names_to_ids(class_info, pseudo))
    summary["checkpoint"] = str(ckpt)
    if config:
        summary["config"] = str(config)
    summary["data"] = str(data.root)
    return summary


def format_evaluation(summary: dict) -> str:
    """The summary's table, the other protocols' seen / unseen / hIoU and the no-object votes."""
    lines = [format_table(summary, title=f"{summary['checkpoint']} on {summary['data']} "
                                         f"(protocol: {summary['protocol']})")]
    for name, other in summary["protocols"].items():
        if name != summary["protocol"]:
            lines.append(f"  {name:>9}: seen {other['miou_seen']:.1f}  unseen "
                         f"{other['miou_unseen']:.1f}  hIoU {other['hiou']:.1f}")
    if "unseen_as_background" in summary:
        lines.append(f"unseen pixels voted no-object: {summary['unseen_as_background']:.1f}%  "
                     f"(seen: {summary['seen_as_background']:.1f}%)")
    return "\n".join(lines)
