"""``celseg eval-vlm``: zero-shot classification and dense segmentation of a VLM, no training."""

from __future__ import annotations

import argparse
import json
import math


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vlm", default="default", help="model name or folder")
    parser.add_argument("--data", required=True, help="dataset root")
    parser.add_argument("--out", default=None, help="write the results to this JSON file")
    parser.add_argument("--split", default="val", help="segmentation split to score")
    parser.add_argument("--max-images", type=int, default=0, help="0: all")
    parser.add_argument("--no-classification", action="store_true",
                        help="skip caption classification (datasets without captions)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from celseg.data.classes import load_classes
    from celseg.evaluation.metrics import format_table
    from celseg.vlm.cache import text_embeddings
    from celseg.vlm.evaluate import classify_captions, dense_segmentation
    from celseg.vlm.registry import load_vlm

    info = load_classes(args.data)
    vlm = load_vlm(args.vlm)
    text = text_embeddings(vlm, list(info.names))
    result: dict = {"vlm": vlm.name, "data": str(args.data)}
    has_captions = (Path(args.data) / "captions" / "captions.jsonl").is_file()
    if not args.no_classification and has_captions:
        cls = classify_captions(vlm, args.data, info, text)
        result["classification"] = cls
        print(f"zero-shot classification (caption val): seen {cls['acc_seen']:.1f}% "
              f"(n={cls['n_seen']}), unseen {cls['acc_unseen']:.1f}% (n={cls['n_unseen']})")
    dense = dense_segmentation(vlm, args.data, info, text, args.split, args.max_images,
                               progress=not args.no_progress)
    result["dense"] = dense
    print(format_table(dense, title=f"dense zero-shot segmentation ({args.split})"))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(_clean(result), indent=1))
    return 0
