"""``celseg predict --ckpt CKPT --classes "cat,dog,road" IMAGES... --out DIR``.

Any vocabulary works: the class names are embedded by the run's vision-language model (or
``--vlm``) and the checkpoint classifies proposals against them.

Library imports sit inside the functions so that ``celseg --help`` and the CLI start fast.
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
    parser.add_argument("--no-ensemble", action="store_true",
                        help="the segmenter alone: skip the out-of-vocabulary ensemble with the "
                             "VLM's mask-pooled image features (used by default when the VLM "
                             "has an image tower)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--compile-backbone", action="store_true",
                        help="torch.compile the backbone (faster on CPU after a few seconds of "
                             "compiling; needs a C++ compiler; eval.compile_backbone)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing files in --out that celseg did not write (inputs "
                             "are never replaced)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from celseg.engine.distributed import resolve_device
    from celseg.engine.predictor import Predictor, parse_class_names, predict_images
    from celseg.errors import DataError

    names = parse_class_names(args.classes)
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        raise DataError(f"image file(s) not found: {', '.join(missing)}")
    if args.max_size < 0:
        raise DataError(f"--max-size must be 0 (keep) or positive, got {args.max_size}")
    check_inputs_and_outputs(args)  # before any model is loaded
    device = resolve_device(args.device)
    predictor = Predictor.from_checkpoint(args.ckpt, device, vlm=args.vlm,
                                          ensemble=not args.no_ensemble,
                                          compile_backbone=args.compile_backbone or None)
    written = predict_images(predictor, args.images, names, args.out, max_size=args.max_size)
    print(f"wrote {len(written)} label PNGs and overlays to {args.out} "
          f"(protocol: {predictor.protocol})")
    return 0


def check_inputs_and_outputs(args: argparse.Namespace) -> None:
    """Image headers readable (size within the pixel limit); no output that would replace an
    input or a file celseg did not write."""
    from celseg.engine.predictor import output_paths
    from celseg.io.images import image_size
    from celseg.io.outputs import OutputGuard

    for image in args.images:
        image_size(image)

    guard = OutputGuard("predict", overwrite=args.overwrite)
    guard.read_checkpoint(args.ckpt).read_files(*args.images).read_path(args.vlm)
    guard.claim(files=[p for image in args.images for p in output_paths(args.out, image)])
