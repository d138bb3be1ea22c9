"""``celseg predict --ckpt CKPT --classes "cat,dog,road" IMAGES... --out DIR``.

Any vocabulary works: the class names are embedded by the run's vision-language model (or
``--vlm``) and the checkpoint classifies proposals against them.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files to segment")
    parser.add_argument("--ckpt", required=True,
                        help="checkpoint: a run folder, its checkpoints/ folder or a "
                             ".safetensors file")
    parser.add_argument("--classes", required=True,
                        help="comma-separated class names, e.g. \"cat,dog,road\"")
    parser.add_argument("--out", required=True,
                        help="output folder for NAME.png labels and NAME_overlay.png pictures")
    parser.add_argument("--vlm", default=None,
                        help="vision-language model for the text embeddings (default: the "
                             "run's model.vlm)")
    parser.add_argument("--max-size", type=int, default=0,
                        help="shrink images whose longer side exceeds this many pixels (0: keep)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from celseg.engine.checkpoint import load_segmenter
    from celseg.engine.distributed import resolve_device
    from celseg.engine.predictor import parse_class_names, predict_images
    from celseg.engine.trainer import load_vlm_cached
    from celseg.errors import DataError

    names = parse_class_names(args.classes)
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        raise DataError(f"image file(s) not found: {', '.join(missing)}")
    device = resolve_device(args.device)
    model, cfg = load_segmenter(args.ckpt, device)
    vlm = load_vlm_cached(args.vlm or cfg.model.vlm)
    written = predict_images(model, args.images, names, vlm, args.out, max_size=args.max_size)
    print(f"wrote {len(written)} label PNGs and overlays to {args.out}")
    return 0
