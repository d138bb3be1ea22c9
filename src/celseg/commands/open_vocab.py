"""``celseg open-vocab``: train on the first generated dataset, test on the second one's names,
and write the report whole (:func:`celseg.ablation.open_vocab.open_vocab_study`).

Library imports sit inside ``run`` so that ``celseg --help`` and the CLI start fast.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from celseg.commands.options import add_set_argument, flatten_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default="",
                        help="base training config of every run (default: the packaged "
                             "synthetic.yaml)")
    add_set_argument(parser, "override config keys of every run (repeatable)")
    parser.add_argument("--data", default="", help="first dataset (default: data.root)")
    parser.add_argument("--ov-data", default="data/synthetic_ov",
                        help="second dataset (make-data synthetic --variant ov)")
    parser.add_argument("--vlm", default="runs/demo/vlm",
                        help="VLM pretrained on both datasets' captions (the runs' model.vlm)")
    parser.add_argument("--eval-config", default="",
                        help="config of the cross-dataset evaluation, as celseg evaluate -c "
                             "(default: the packaged synthetic_ov_eval.yaml)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--out", default="runs/open_vocab", help="folder of every run")
    parser.add_argument("--results", default="",
                        help="markdown report to write whole (e.g. docs/RESULTS_OPEN_VOCAB.md)")
    parser.add_argument("--notes", default="", help="markdown file whose text ends the report")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (processes)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --results or write into --out although celseg did not "
                             "write them")


def run(args: argparse.Namespace) -> int:
    from celseg.ablation.open_vocab import open_vocab_study
    from celseg.errors import CelsegError
    from celseg.io.atomic import write_json, write_text
    from celseg.io.outputs import OutputGuard

    if args.seeds < 1:  # before any output is claimed
        raise CelsegError(f"--seeds must be at least 1, got {args.seeds}")
    overrides = flatten_overrides(args.overrides) + ([f"data.root={args.data}"] if args.data
                                                     else [])
    guard = OutputGuard("open-vocab", overwrite=args.overwrite)
    guard.read_config(args.config or None).read_config(args.eval_config or None)
    guard.read_dataset(args.ov_data).read_path(args.vlm).read_files(args.notes or None)
    guard.claim(files=[args.results] if args.results else [], folders=[args.out],
                record_files=False)
    command = "celseg " + shlex.join(["open-vocab", *sys.argv[2:]]) \
        if sys.argv[1:2] == ["open-vocab"] else f"celseg open-vocab --seeds {args.seeds}"
    note = Path(args.notes).read_text() if args.notes else ""
    out = Path(args.out)
    study = open_vocab_study(args.config, overrides, args.ov_data, args.vlm, args.seeds, out,
                             command, args.eval_config, note, progress=not args.quiet,
                             jobs=args.jobs)
    write_json(out / "open_vocab.json", {k: study[k] for k in ("command", "table", "runs")})
    write_text(out / "open_vocab.md", study["report"])
    if args.results:
        guard.record(write_text(args.results, study["report"]))
        print(f"wrote {args.results}")
    print(study["report"])
    return 0
