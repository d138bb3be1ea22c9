"""``celseg export RUN OUT``: a run as a self-contained model folder that can be moved and shared.

OUT holds the config, the safetensors weights, the VLM folder (or its Hub id), the training
vocabulary and a model card (README.md); ``celseg.load``, ``celseg predict --ckpt`` and
``celseg serve --ckpt`` read it, and ``huggingface-cli upload`` shares it. Layout:
``celseg.engine.export``.

Library imports sit inside the functions so that ``celseg --help`` and the CLI start fast.
"""

from __future__ import annotations

import argparse
import re


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder (or its checkpoints/ folder or weights file)")
    parser.add_argument("out", help="output folder: new, or one celseg export wrote before")
    parser.add_argument("--license", default="mit",
                        help="licence id for the model card, e.g. mit, apache-2.0 (default mit)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an OUT folder holding files celseg did not write")


def run(args: argparse.Namespace) -> int:
    import json

    from celseg.engine.export import claim_export, export_run
    from celseg.errors import DataError

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+-]*", args.license):
        raise DataError(f"--license {args.license!r}: give a licence id such as mit or "
                        "apache-2.0")
    claim_export(args.run, args.out, args.overwrite)
    command = f"celseg export {args.run} {args.out}" + (
        f" --license {args.license}" if args.license != "mit" else "")
    marker = export_run(args.run, args.out, args.license, command)
    print(json.dumps(marker, indent=1))
    print(f"exported to {args.out}: load it with celseg.load({str(args.out)!r}) or "
          f"celseg predict --ckpt {args.out}")
    return 0
