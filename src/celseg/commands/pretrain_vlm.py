"""``celseg pretrain-vlm``: train the offline default VLM (LiT) on a dataset's caption split.

Library imports sit inside the functions so that ``celseg --help`` and the CLI start fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from celseg.vlm.config import VLMConfig

    d = VLMConfig()
    parser.add_argument("--data", required=True, nargs="+",
                        help="dataset root(s) with captions/captions.jsonl; several roots: one "
                        "VLM learns the names of every dataset (e.g. both generated worlds)")
    parser.add_argument("--out", required=True, help="output folder (model.safetensors + "
                        "celseg_vlm.json)")
    parser.add_argument("--steps", type=int, default=None, help=f"optimiser steps ({d.steps})")
    parser.add_argument("--epochs", type=float, default=None,
                        help="passes over the caption images (overrides --steps)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size,
                        help="image-caption pairs per contrastive step")
    parser.add_argument("--lr-backbone", type=float, default=d.lr_backbone,
                        help="learning rate of the trained image-tower blocks")
    parser.add_argument("--lr-proj", type=float, default=d.lr_proj,
                        help="learning rate of the projection and the temperature")
    parser.add_argument("--train-from-block", type=int, default=d.train_from_block,
                        help="EfficientNet blocks before this index stay frozen (0-16)")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="seed of initialisation and batch order")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    import torch

    threads = torch.get_num_threads()
    if args.threads:  # for this command only: an in-process caller keeps its own setting
        torch.set_num_threads(args.threads)
    try:
        return _pretrain(args)
    finally:
        torch.set_num_threads(threads)


def _pretrain(args: argparse.Namespace) -> int:
    import math

    from celseg.vlm.config import VLMConfig
    from celseg.vlm.pretrain import pretrain, read_captions

    cfg = VLMConfig(batch_size=args.batch_size, lr_backbone=args.lr_backbone,
                    lr_proj=args.lr_proj, train_from_block=args.train_from_block, seed=args.seed)
    if args.epochs is not None:
        n = len(read_captions(args.data, "train"))
        cfg = dataclasses.replace(cfg, steps=max(1, math.ceil(args.epochs * n / cfg.batch_size)))
    elif args.steps is not None:
        cfg = dataclasses.replace(cfg, steps=args.steps)
    summary = pretrain(args.data, args.out, cfg, resume=args.resume,
                       progress=not args.no_progress)
    print(json.dumps(summary))
    print(f"saved to {args.out} (load with --vlm {args.out})")
    return 0
