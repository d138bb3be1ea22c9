"""``celseg evaluate --ckpt CKPT [-c EVAL.yaml] [--data DIR] [--out FILE.json]``: seen / unseen /
hIoU (:func:`celseg.engine.evaluate_checkpoint.evaluate_checkpoint`).

Library imports sit inside the functions so that ``celseg --help`` and the CLI start fast.
"""

from __future__ import annotations

import argparse
from typing import Any

from celseg.commands.options import add_set_argument, flatten_overrides


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
    from celseg.engine.evaluate_checkpoint import (
        check_overrides,
        evaluate_checkpoint,
        format_evaluation,
    )
    from celseg.engine.logger import write_json
    from celseg.viz.charts import per_class_beside

    overrides = check_overrides(flatten_overrides(args.overrides))
    guard = claim_output(args)
    summary = evaluate_checkpoint(args.ckpt, args.config, overrides,
                                  args.data, args.split, args.vlm, args.device, args.max_images,
                                  progress=not args.no_progress)
    print(format_evaluation(summary))
    if guard is not None:
        out = write_json(args.out, summary)
        guard.record(out)
        per_class_beside(summary, out)  # NAME_per_class.png; a warning if it cannot be drawn
    return 0
