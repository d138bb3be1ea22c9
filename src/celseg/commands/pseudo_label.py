"""``celseg pseudo-label``: unseen-class pseudo labels from a VLM, or a self-training relabel.

    celseg pseudo-label --vlm runs/vlm --data data/synthetic --out runs/pseudo --threshold 0.5
    celseg pseudo-label --from-ckpt runs/ce/checkpoints/last.safetensors --data data/synthetic \
        --out runs/self_train

Writes ``OUT/NAME.png`` per image (usable as ``data.label_dir``) and ``OUT/report.json``, and
prints precision / recall per unseen class. Library imports sit inside ``run`` (fast ``--help``).
"""

from __future__ import annotations

import argparse
import json

from celseg.pseudo import dense

DENSE_OPTIONS = ("temperature", "key_smoothing", "smoothing_k", "smoothing_tau",
                 "prompt_denoising", "denoise_threshold")  # pseudo_label's keyword arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vlm", default=None,
                        help="VLM giving the dense predictions: a name or a folder (from "
                             "pretrain-vlm, or a CLIP folder); required unless --from-ckpt")
    parser.add_argument("--from-ckpt", default=None, metavar="CKPT",
                        help="self-training: relabel with this segmenter checkpoint's predictions")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="dataset root in the celseg layout")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder for NAME.png and report.json; may not be inside the "
                             "dataset's annotations/ or images/")
    parser.add_argument("--split", default="train", help="which split to label (default: train)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="minimum confidence of a written unseen-class argmax (0.5)")
    parser.add_argument("--class-share", type=float, default=0.0,
                        help="with --from-ckpt: each unseen class also keeps the most confident "
                             "share of its own predicted pixels (0: off, e.g. 0.5)")
    parser.add_argument("--no-ensemble", action="store_true",
                        help="with --from-ckpt: relabel with the segmenter alone instead of its "
                             "ensemble with the VLM's mask-pooled image features")
    parser.add_argument("--temperature", type=float, default=dense.DEFAULT_TEMPERATURE,
                        help="softmax temperature over the VLM's cosine scores; 0.01 = CLIP's "
                             f"logit scale 100 (default: {dense.DEFAULT_TEMPERATURE})")
    parser.add_argument("--key-smoothing", action="store_true",
                        help="MaskCLIP key smoothing over the most similar feature locations")
    parser.add_argument("--smoothing-k", type=int, default=dense.DEFAULT_SMOOTHING_K,
                        help=f"key smoothing's k (default: {dense.DEFAULT_SMOOTHING_K})")
    parser.add_argument("--smoothing-tau", type=float, default=dense.DEFAULT_SMOOTHING_TAU,
                        help="temperature of the key-smoothing weights over cosine similarities "
                             f"(default: {dense.DEFAULT_SMOOTHING_TAU})")
    parser.add_argument("--prompt-denoising", action="store_true",
                        help="MaskCLIP prompt denoising (below --denoise-threshold)")
    parser.add_argument("--denoise-threshold", type=float, default=dense.DEFAULT_DENOISE_THRESHOLD,
                        help="confidence below which prompt denoising drops a class "
                             f"(default: {dense.DEFAULT_DENOISE_THRESHOLD})")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--max-items", type=int, default=0, help="only the first N images (0: all)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files in --out that celseg did not write (never the "
                             "dataset's own)")


def run(args: argparse.Namespace) -> int:
    from celseg.pseudo.job import check_numbers, check_request, label_split
    from celseg.pseudo.report import format_table

    a = args
    check_numbers(a.threshold, a.denoise_threshold, a.temperature, a.smoothing_k,
                  a.smoothing_tau, a.max_items)
    check_request(a.data, a.out, a.split, a.vlm, a.from_ckpt, a.max_items, a.overwrite)
    dense_options = {k: getattr(a, k) for k in DENSE_OPTIONS}
    report = label_split(a.data, a.out, a.threshold, a.split, a.vlm, a.from_ckpt, a.device,
                         a.max_items, not a.no_progress, a.class_share, not a.no_ensemble,
                         dense_options)
    print(format_table(report))
    print(f"wrote {report['images']} label maps and report.json to {a.out}")
    print(json.dumps(report["settings"]))
    return 0
