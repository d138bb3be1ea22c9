"""``celseg evaluate --ckpt CKPT [-c EVAL.yaml] [--data DIR] [--out FILE.json]``: seen / unseen /
hIoU.

Settings come from the checkpoint's config.yaml; ``-c`` overlays the ``data`` and ``eval`` keys
written in a config file (and its ``base``), then ``--set data.*|eval.*``, then ``--data`` /
``--split``. The file's other sections are ignored: the model is the checkpoint's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from celseg.commands.options import add_set_argument, flatten_overrides

EVAL_SECTIONS = ("data", "eval")
EVAL_SECTIONS_PREFIX = tuple(f"{s}." for s in EVAL_SECTIONS)


def overlay_eval_config(cfg: Any, path: str | Path) -> Any:
    """``cfg`` with the ``data`` / ``eval`` keys written in the config file at ``path`` (its
    ``base`` first, then the file) applied; the whole file is validated as a config."""
    from celseg.config import load_config

    path = Path(path)
    file_cfg = load_config(path)  # validates every key (and the base rule)
    raw = yaml.safe_load(path.read_text()) or {}
    layers = []
    if isinstance(raw, dict) and "base" in raw:
        base = yaml.safe_load((path.parent / str(raw["base"])).read_text()) or {}
        layers.append(base)
    layers.append(raw)
    for section in EVAL_SECTIONS:
        keys = [k for layer in layers for k in (layer.get(section) or {})]
        if keys:
            values = {k: getattr(getattr(file_cfg, section), k) for k in keys}
            cfg = dataclasses.replace(
                cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)})
    return cfg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True,
                        help="checkpoint: a run folder, its checkpoints/ folder or a "
                             ".safetensors file (the run's config.yaml is read beside it)")
    parser.add_argument("-c", "--config", default=None,
                        help="eval config file (e.g. configs/paper/ov_eval_ade150.yaml): its "
                             "data and eval keys (with its base's) override the checkpoint's")
    parser.add_argument("--data", default=None,
                        help="dataset root to evaluate on (default: data.root of the run)")
    parser.add_argument("--split", default=None,
                        help="split to evaluate (default: data.val_split of the run)")
    parser.add_argument("--out", default=None,
                        help="write the summary with per-class IoU to this JSON file")
    parser.add_argument("--vlm", default=None,
                        help="vision-language model for the text embeddings (default: the "
                             "run's model.vlm; must share its text space); also the two-stage "
                             "image encoder when eval.two_stage_vlm is empty")
    add_set_argument(parser, "override eval or data settings, e.g. --set "
                             "eval.seen_calibration=0.1 eval.two_stage=true", "eval.KEY=VALUE")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--max-images", type=int, default=0,
                        help="evaluate only the first N images (0: all)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from celseg.config import apply_override
    from celseg.data.classes import load_classes
    from celseg.data.dataset import SegmentationDataset
    from celseg.data.transforms import build_eval_transform
    from celseg.engine.checkpoint import load_segmenter
    from celseg.engine.distributed import resolve_device
    from celseg.engine.evaluator import evaluate
    from celseg.engine.trainer import class_text_embeddings
    from celseg.errors import CelsegError
    from celseg.evaluation.metrics import format_table

    overrides = flatten_overrides(args.overrides)
    for item in overrides:
        if not item.startswith(EVAL_SECTIONS_PREFIX):
            raise CelsegError(f"evaluate --set only takes eval.* or data.* keys, got {item!r}")
    device = resolve_device(args.device)
    model, cfg = load_segmenter(args.ckpt, device)
    if args.config:
        cfg = overlay_eval_config(cfg, args.config)
    for item in overrides:
        cfg = apply_override(cfg, item)
    data = dataclasses.replace(cfg.data, root=args.data or cfg.data.root)
    class_info = load_classes(data.root)
    dataset = SegmentationDataset(
        data.root, args.split or data.val_split, transform=build_eval_transform(data),
        view="full", max_items=args.max_images, class_info=class_info,
    )
    text_emb = class_text_embeddings(args.vlm or cfg.model.vlm, list(class_info.names), device)
    summary = evaluate(model, dataset, text_emb, class_info, cfg.eval, device,
                       progress=not args.no_progress,
                       two_stage_vlm=cfg.eval.two_stage_vlm or args.vlm or cfg.model.vlm)
    summary["checkpoint"] = str(args.ckpt)
    if args.config:
        summary["config"] = str(args.config)
    summary["data"] = str(data.root)
    print(format_table(summary, title=f"{args.ckpt} on {data.root}"))
    if "unseen_as_background" in summary:
        print(f"unseen pixels voted no-object: {summary['unseen_as_background']:.1f}%  "
              f"(seen: {summary['seen_as_background']:.1f}%)")
    if args.out:
        from celseg.engine.logger import _jsonable

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_jsonable(summary), indent=1))
    return 0
