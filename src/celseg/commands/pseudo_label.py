"""``celseg pseudo-label``: unseen-class pseudo labels from a VLM, or a self-training relabel.

    celseg pseudo-label --vlm runs/vlm --data data/synthetic --out runs/pseudo --threshold 0.5
    celseg pseudo-label --from-ckpt runs/ce/checkpoints/last.safetensors --data data/synthetic \
        --out runs/self_train

Writes ``OUT/NAME.png`` for every image of the split (usable as ``data.label_dir``) and
``OUT/report.json``, and prints pseudo-label precision / recall per unseen class.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from celseg.errors import CelsegError
from celseg.pseudo import dense


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vlm", default=None,
                        help="vision-language model giving the dense predictions: a name or a "
                             "folder (e.g. one written by pretrain-vlm, or a CLIP folder); "
                             "required unless --from-ckpt is given")
    parser.add_argument("--from-ckpt", default=None, metavar="CKPT",
                        help="self-training: relabel with this trained segmenter checkpoint's own "
                             "predictions instead of a VLM (its config names the text VLM)")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="dataset root in the celseg layout (classes.json, images/, "
                             "annotations/)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder for NAME.png and report.json; may not be inside the "
                             "dataset's annotations/ or images/")
    parser.add_argument("--split", default="train",
                        help="which split to label (default: train)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="minimum confidence of an unseen-class argmax to be written "
                             "(default: 0.5)")
    parser.add_argument("--class-share", type=float, default=0.0,
                        help="with --from-ckpt: class-balanced thresholds; each unseen class also "
                             "keeps the most confident share of its own predicted pixels "
                             "(0: off, e.g. 0.5)")
    parser.add_argument("--no-ensemble", action="store_true",
                        help="with --from-ckpt: relabel with the segmenter alone instead of its "
                             "ensemble with the VLM's mask-pooled image features")
    parser.add_argument("--temperature", type=float, default=dense.DEFAULT_TEMPERATURE,
                        help="softmax temperature over the VLM's cosine scores; 0.01 = CLIP's "
                             f"logit scale 100 (default: {dense.DEFAULT_TEMPERATURE})")
    parser.add_argument("--key-smoothing", action="store_true",
                        help="MaskCLIP key smoothing: average each location's probabilities with "
                             "those of its most similar feature locations")
    parser.add_argument("--smoothing-k", type=int, default=dense.DEFAULT_SMOOTHING_K,
                        help="number of most similar locations used by key smoothing "
                             f"(default: {dense.DEFAULT_SMOOTHING_K})")
    parser.add_argument("--smoothing-tau", type=float, default=dense.DEFAULT_SMOOTHING_TAU,
                        help="temperature of the key-smoothing weights over cosine similarities "
                             f"(default: {dense.DEFAULT_SMOOTHING_TAU})")
    parser.add_argument("--prompt-denoising", action="store_true",
                        help="MaskCLIP prompt denoising: drop classes whose highest confidence in "
                             "the image is below --denoise-threshold")
    parser.add_argument("--denoise-threshold", type=float, default=dense.DEFAULT_DENOISE_THRESHOLD,
                        help="confidence below which prompt denoising drops a class "
                             f"(default: {dense.DEFAULT_DENOISE_THRESHOLD})")
    parser.add_argument("--device", default="cpu",
                        help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--max-items", type=int, default=0,
                        help="label only the first N images (default: 0 = all)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing files in --out that celseg did not write (the "
                             "dataset's own files are never replaced)")


def check_arguments(args: argparse.Namespace) -> None:
    """Numbers in range and outputs that replace nothing foreign, before any model is loaded."""
    from celseg.data.dataset import SegmentationDataset
    from celseg.io.outputs import OutputGuard
    from celseg.pseudo.generate import check_out_dir

    for flag, value, ok in (
            ("--threshold", args.threshold, 0.0 <= args.threshold <= 1.0),
            ("--denoise-threshold", args.denoise_threshold, 0.0 <= args.denoise_threshold <= 1.0),
            ("--temperature", args.temperature, args.temperature > 0),
            ("--smoothing-k", args.smoothing_k, args.smoothing_k >= 1),
            ("--smoothing-tau", args.smoothing_tau, args.smoothing_tau > 0),
            ("--max-items", args.max_items, args.max_items >= 0)):
        if not ok:
            raise CelsegError(f"{flag} {value} is out of range (thresholds lie in [0, 1], "
                              "temperatures are positive, counts are positive or 0)")
    check_out_dir(args.data, args.out)
    guard = OutputGuard("pseudo-label", overwrite=args.overwrite).read_dataset(args.data)
    guard.read_path(args.vlm)
    if args.from_ckpt:
        guard.read_checkpoint(args.from_ckpt)
    dataset = SegmentationDataset(args.data, args.split, max_items=args.max_items)
    out = Path(args.out)
    guard.claim(files=[*(out / f"{image.stem}.png" for image, _ in dataset.samples),
                       out / "report.json"])


def run(args: argparse.Namespace) -> int:
    from celseg.pseudo.report import format_table

    check_arguments(args)  # before any model is loaded
    progress = not args.no_progress
    if args.from_ckpt:
        if args.vlm:
            raise CelsegError("--vlm and --from-ckpt exclude each other: the checkpoint's config "
                              "names the VLM used for its text embeddings")
        from celseg.pseudo.self_train import relabel_from_checkpoint

        report = relabel_from_checkpoint(args.from_ckpt, args.data, args.out, args.threshold,
                                         split=args.split, device=args.device,
                                         progress=progress, max_items=args.max_items,
                                         class_share=args.class_share,
                                         ensemble=not args.no_ensemble)
    else:
        if not args.vlm:
            raise CelsegError("give --vlm NAME_OR_PATH (or --from-ckpt CKPT for self-training)")
        from celseg.pseudo.generate import pseudo_label
        from celseg.vlm.registry import load_vlm

        vlm = load_vlm(args.vlm, device=args.device)
        report = pseudo_label(vlm, args.data, args.out, args.threshold, split=args.split,
                              temperature=args.temperature, key_smoothing=args.key_smoothing,
                              smoothing_k=args.smoothing_k, smoothing_tau=args.smoothing_tau,
                              prompt_denoising=args.prompt_denoising,
                              denoise_threshold=args.denoise_threshold, progress=progress,
                              max_items=args.max_items)
    print(format_table(report))
    print(f"wrote {report['images']} label maps and report.json to {args.out}")
    print(json.dumps(report["settings"]))
    return 0
