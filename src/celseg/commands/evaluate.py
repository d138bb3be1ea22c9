"""``celseg evaluate --ckpt CKPT [-c EVAL.yaml] [--data DIR] [--out FILE.json]``: seen / unseen /
hIoU.

Settings come from the checkpoint's config.yaml; ``-c`` overlays the ``data`` and ``eval`` keys
written in a config file (and its ``base``), then ``--set data.*|eval.*``, then ``--data`` /
``--split``. The file's other sections are ignored: the model is the checkpoint's.
"""

from __future__ import annotations

import argparse
import dataclasses
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


def names_to_ids(class_info: Any, names: list[str]) -> tuple[int, ...]:
    """Dataset ids of the ``names`` the dataset has (others are ignored)."""
    wanted = set(names)
    return tuple(i for i, n in enumerate(class_info.names) if n in wanted)


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
                             "eval.ensemble=false (the segmenter alone) eval.two_stage=true",
                     "eval.KEY=VALUE")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--max-images", type=int, default=0,
                        help="evaluate only the first N images (0: all)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out file that celseg did not write")


def claim_output(args: argparse.Namespace) -> Any:
    """Check ``--out`` before any model is loaded (not an input, not a foreign file); returns
    the ``OutputGuard`` that records it once written, None without ``--out``."""
    if not args.out:
        return None
    from celseg.config import load_config
    from celseg.engine.checkpoint import resolve_checkpoint
    from celseg.io.outputs import OutputGuard

    guard = OutputGuard("evaluate", overwrite=args.overwrite)
    guard.read_checkpoint(args.ckpt).read_config(args.config).read_path(args.vlm)
    guard.read_dataset(args.data or load_config(resolve_checkpoint(args.ckpt)[1]).data.root)
    guard.claim(files=[args.out], record_files=False)
    return guard


def run(args: argparse.Namespace) -> int:
    from celseg.config import apply_overrides
    from celseg.data.classes import load_classes
    from celseg.data.dataset import SegmentationDataset
    from celseg.data.transforms import build_eval_transform
    from celseg.engine.checkpoint import label_names, load_segmenter
    from celseg.engine.distributed import resolve_device
    from celseg.engine.evaluator import evaluate
    from celseg.errors import CelsegError
    from celseg.evaluation.metrics import format_table
    from celseg.vlm.loading import class_text_embeddings

    overrides = flatten_overrides(args.overrides)
    for item in overrides:
        if not item.startswith(EVAL_SECTIONS_PREFIX):
            raise CelsegError(f"evaluate --set only takes eval.* or data.* keys, got {item!r}")
    guard = claim_output(args)
    device = resolve_device(args.device)
    model, cfg = load_segmenter(args.ckpt, device)
    if args.config:
        cfg = overlay_eval_config(cfg, args.config)
    cfg = apply_overrides(cfg, overrides)  # validated once, after the last one
    data = dataclasses.replace(cfg.data, root=args.data or cfg.data.root)
    class_info = load_classes(data.root)
    dataset = SegmentationDataset(
        data.root, args.split or data.val_split, transform=build_eval_transform(data),
        view="full", max_items=args.max_images, class_info=class_info,
    )
    text_emb = class_text_embeddings(args.vlm or cfg.model.vlm, list(class_info.names), device)
    labelled, pseudo = label_names(args.ckpt, cfg)
    summary = evaluate(model, dataset, text_emb, class_info, cfg.eval, device,
                       progress=not args.no_progress, vlm=args.vlm or cfg.model.vlm,
                       labelled_ids=names_to_ids(class_info, labelled),
                       pseudo_ids=names_to_ids(class_info, pseudo))
    summary["checkpoint"] = str(args.ckpt)
    if args.config:
        summary["config"] = str(args.config)
    summary["data"] = str(data.root)
    print(format_table(summary, title=f"{args.ckpt} on {data.root} "
                                      f"(protocol: {summary['protocol']})"))
    for name, other in summary["protocols"].items():
        if name != summary["protocol"]:
            print(f"  {name:>9}: seen {other['miou_seen']:.1f}  unseen {other['miou_unseen']:.1f}"
                  f"  hIoU {other['hiou']:.1f}")
    if "unseen_as_background" in summary:
        print(f"unseen pixels voted no-object: {summary['unseen_as_background']:.1f}%  "
              f"(seen: {summary['seen_as_background']:.1f}%)")
    if guard is not None:
        from celseg.engine.logger import _jsonable
        from celseg.io.atomic import write_json

        out = write_json(args.out, _jsonable(summary))
        guard.record(out)
        from celseg.viz.charts import per_class_beside
        per_class_beside(summary, out)  # NAME_per_class.png; a warning if it cannot be drawn
    return 0
