"""``celseg predict --ckpt MODEL --classes "cat,dog,road" IMAGES... --out DIR``.

IMAGES are files, folders and glob patterns (quoted: "photos/**/*.jpg"). MODEL is a run folder,
a folder written by ``celseg export`` or a Hugging Face Hub id; without ``--ckpt``, ``--vlm``
segments alone (training-free). Each image gives ``OUT/NAME.png`` (uint8 positions in the class
list) and ``OUT/NAME_overlay.png``; inputs sharing a file stem are numbered (``x-1``, ``x-2``).

Library imports sit inside the functions so that ``celseg --help`` and the CLI start fast.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--ckpt", default=None,
                        help="a run folder (or its checkpoints/ folder or .safetensors file), a "
                             "folder written by celseg export, or a Hugging Face Hub id; leave "
                             "out for training-free segmentation with --vlm")
    parser.add_argument("--classes", required=True,
                        help="comma-separated class names, e.g. \"cat,dog,road\"")
    parser.add_argument("--out", required=True,
                        help="output folder for NAME.png labels and NAME_overlay.png pictures")
    parser.add_argument("--vlm", default=None,
                        help="vision-language model: with --ckpt it replaces the run's model.vlm; "
                             "alone it segments by itself (a pretrain-vlm folder or CLIP)")
    parser.add_argument("--max-size", type=int, default=0,
                        help="shrink images whose longer side exceeds this many pixels (0: keep)")
    parser.add_argument("--shares", action="store_true",
                        help="also write OUT/shares.json: percent of pixels per class per image")
    parser.add_argument("--no-ensemble", action="store_true",
                        help="the segmenter alone: skip the out-of-vocabulary ensemble with the "
                             "VLM's mask-pooled image features (used by default when the VLM "
                             "has an image tower)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--compile-backbone", action="store_true",
                        help="torch.compile the backbone (eval.compile_backbone)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing files in --out that celseg did not write (inputs "
                             "are never replaced)")


def run(args: argparse.Namespace) -> int:
    from celseg.api.batch import check_outputs, segment_files
    from celseg.api.inputs import expand_images, output_names
    from celseg.api.model import load
    from celseg.engine.hub import fetch_model
    from celseg.engine.predictor import parse_class_names
    from celseg.errors import DataError

    names = parse_class_names(args.classes)
    if args.max_size < 0:
        raise DataError(f"--max-size must be 0 (keep) or positive, got {args.max_size}")
    if args.ckpt is None and args.vlm is None:
        raise DataError("give --ckpt MODEL, or --vlm VLM alone for training-free segmentation")
    images, folders = expand_images(args.images)
    ckpt = fetch_model(args.ckpt) if args.ckpt else None
    stems = output_names(images)
    check_outputs(images, folders, stems, args.out, ckpt, args.vlm, args.shares,
                  args.overwrite)  # before any model is loaded
    model = load(ckpt, vlm=args.vlm, device=args.device, ensemble=not args.no_ensemble,
                 compile_backbone=args.compile_backbone or None)
    written = segment_files(model, images, stems, names, args.out, args.max_size, args.shares,
                            progress=len(images) > 1)
    print(f"wrote {len(written)} label PNGs and overlays to {args.out} "
          f"(protocol: {model.protocol})")
    return 0
