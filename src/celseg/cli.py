"""The ``celseg`` command line: ``main(argv)`` dispatches to one module per subcommand.

Each module in ``celseg.commands`` exposes ``add_arguments(parser)`` and ``run(args) -> int``.
The table below is explicit (no import side effects); a module is imported only when its
subcommand runs or ``--help`` is asked for it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from celseg.config import RemovedKeyWarning, RenamedValueWarning
from celseg.errors import CelsegError

COMMANDS: dict[str, tuple[str, str]] = {
    "make-data": ("celseg.commands.make_data",
                  "generate the synthetic benchmark or convert a real dataset"),
    "show": ("celseg.commands.show", "write a contact sheet of dataset samples with a legend"),
    "pretrain-vlm": ("celseg.commands.pretrain_vlm",
                     "train the offline default vision-language model"),
    "eval-vlm": ("celseg.commands.eval_vlm",
                 "zero-shot classification and dense segmentation of a VLM"),
    "train": ("celseg.commands.train", "train a segmenter from a config"),
    "evaluate": ("celseg.commands.evaluate", "evaluate a checkpoint: seen / unseen / hIoU"),
    "predict": ("celseg.commands.predict", "segment images with any list of class names"),
    "export": ("celseg.commands.export", "a run as a self-contained model folder to share"),
    "pseudo-label": ("celseg.commands.pseudo_label", "write unseen-class pseudo labels from a VLM"),
    "ablate": ("celseg.commands.ablate",
               "run the ablation of the paper's claims over unseen sets and seeds"),
    "open-vocab": ("celseg.commands.open_vocab",
                   "train on one generated world, test on another world's names"),
    "protocol-study": ("celseg.commands.protocol_study",
                       "compare the ensemble's inference settings on dev data"),
    "dry-run": ("celseg.commands.dry_run",
                "run a config end to end at its real shapes on a small dataset, measured"),
    "reproduce": ("celseg.commands.reproduce",
                  "raw VOC / COCO-Stuff archives to the paper's seen / unseen / hIoU table"),
    "demo": ("celseg.commands.demo", "run the whole main job on the embedded benchmark"),
    "serve": ("celseg.commands.serve", "a local web page: your image, your class names"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="celseg",
        description="Zero-shot semantic segmentation with class enhancement losses and pseudo "
        "labels.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only=command or "__none__")
    args = parser.parse_args(argv)
    if command is None:
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    # DeprecationWarnings are hidden outside __main__; an old config spelling is the user's
    warnings.filterwarnings("default", category=RenamedValueWarning)
    warnings.filterwarnings("default", category=RemovedKeyWarning)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except CelsegError as exc:
        print(f"celseg {command}: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))  # Interrupted: 128 + signal number
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
