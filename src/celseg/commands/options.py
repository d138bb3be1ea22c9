"""Command-line options shared by several subcommands."""

from __future__ import annotations

import argparse


def add_set_argument(parser: argparse.ArgumentParser, help_text: str,
                     metavar: str = "SECTION.KEY=VALUE") -> None:
    """``--set SECTION.KEY=VALUE ...``, repeatable; read back with :func:`flatten_overrides`."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], nargs="+",
                        metavar=metavar, help=help_text)


def flatten_overrides(groups: list) -> list[str]:
    """``--set a=1 b=2 --set c=3`` arrives as nested lists; flatten them in order."""
    flat: list[str] = []
    for item in groups:
        flat.extend(item if isinstance(item, list) else [item])
    return flat
