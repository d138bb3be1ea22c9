"""``celseg reproduce voc --src VOCdevkit --out DIR`` (or ``coco-stuff --src cocostuff``): convert
the raw download, write the pseudo labels, train the paper's four variants, evaluate them and
write ``OUT/table.md`` and ``OUT/table.json`` with the peers' published numbers beside them
(:mod:`celseg.paper.reproduce`). Re-running continues an interrupted job.

Library imports sit inside the functions so that ``celseg --help`` and the CLI start fast.
"""

from __future__ import annotations

import argparse

from celseg.commands.options import add_set_argument, flatten_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=("voc", "coco-stuff"), help="benchmark to reproduce")
    parser.add_argument("--src", required=True,
                        help="the raw download: VOCdevkit (voc) or the folder holding images/ "
                             "and annotations/ (coco-stuff); see docs/REAL_BENCHMARKS.md")
    parser.add_argument("--out", required=True, help="output folder (data, runs, table)")
    parser.add_argument("--family", default="resnet", choices=("resnet", "clip"),
                        help="model family: ResNet-101 (zsseg-style, default) or the frozen "
                             "CLIP ViT-B/16 tower (ZegCLIP / FC-CLIP style)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per variant (default 1)")
    add_set_argument(parser, "override the family's base config, e.g. a tiny schedule: --set "
                             "train.iterations=2 data.crop_size=64")
    parser.add_argument("--random-init", action="store_true",
                        help="build the hub models from their real configurations with random "
                             "weights (for checking the pipeline offline; numbers meaningless)")
    parser.add_argument("--pseudo-threshold", type=float, default=0.5,
                        help="confidence of a written unseen pseudo label (default 0.5)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out folder holding files celseg did not write")


def run(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from celseg.errors import DataError
    from celseg.io.atomic import write_json, write_text
    from celseg.io.outputs import OutputGuard
    from celseg.paper.reproduce import markdown, reproduce

    if not Path(args.src).is_dir():
        raise DataError(f"--src {args.src} is not an existing folder")
    if not 0.0 <= args.pseudo_threshold <= 1.0:
        raise DataError(f"--pseudo-threshold must lie in [0, 1], got {args.pseudo_threshold}")
    out = Path(args.out)
    OutputGuard("reproduce", overwrite=args.overwrite).read_dirs(args.src).claim(folders=[out])
    result = reproduce(args.dataset, Path(args.src), out, args.family,
                       flatten_overrides(args.overrides), args.seeds, args.random_init,
                       args.pseudo_threshold, progress=not args.no_progress)
    command = " ".join(shlex.quote(a) for a in (
        "celseg", "reproduce", args.dataset, "--src", str(args.src), "--out", str(out),
        "--family", args.family, "--seeds", str(args.seeds),
        *(["--random-init"] if args.random_init else []),
        *(["--set", *flatten_overrides(args.overrides)] if args.overrides else [])))
    write_json(out / "table.json", result)
    write_text(out / "table.md", markdown(result, command))
    print(markdown(result, command))
    print(f"wrote {out / 'table.md'} and {out / 'table.json'}")
    return 0
