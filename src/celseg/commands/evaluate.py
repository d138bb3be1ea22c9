"""``celseg evaluate --ckpt CKPT [--data DIR] [--out FILE.json]``: seen / unseen / hIoU."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True,
                        help="checkpoint: a run folder, its checkpoints/ folder or a "
                             ".safetensors file (the run's config.yaml is read beside it)")
    parser.add_argument("--data", default=None,
                        help="dataset root to evaluate on (default: data.root of the run)")
    parser.add_argument("--split", default=None,
                        help="split to evaluate (default: data.val_split of the run)")
    parser.add_argument("--out", default=None,
                        help="write the summary with per-class IoU to this JSON file")
    parser.add_argument("--vlm", default=None,
                        help="vision-language model for the text embeddings (default: the "
                             "run's model.vlm; must share its text space)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], nargs="+",
                        metavar="eval.KEY=VALUE",
                        help="override eval settings, e.g. --set eval.seen_calibration=0.1")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--max-images", type=int, default=0,
                        help="evaluate only the first N images (0: all)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from celseg.commands.train import flatten_overrides
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

    device = resolve_device(args.device)
    model, cfg = load_segmenter(args.ckpt, device)
    for item in flatten_overrides(args.overrides):
        if not item.startswith("eval."):
            raise CelsegError(f"evaluate --set only takes eval.* keys, got {item!r}")
        cfg = apply_override(cfg, item)
    data = dataclasses.replace(cfg.data, root=args.data or cfg.data.root)
    class_info = load_classes(data.root)
    dataset = SegmentationDataset(
        data.root, args.split or data.val_split, transform=build_eval_transform(data),
        view="full", max_items=args.max_images, class_info=class_info,
    )
    text_emb = class_text_embeddings(args.vlm or cfg.model.vlm, list(class_info.names), device)
    summary = evaluate(model, dataset, text_emb, class_info, cfg.eval, device,
                       progress=not args.no_progress)
    summary["checkpoint"] = str(args.ckpt)
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
