"""The house's shape: short functions, thin commands, one public name in the trainer module.

Limits: every function in src/celseg at most 80 lines (``train`` at most 60), every command
module at most 80 lines, and ``train`` the only name imported from ``celseg.engine.trainer``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "celseg"
FUNCTION_LIMIT = 80
TRAIN_LIMIT = 60
COMMAND_LIMIT = 80


def function_lengths(root: Path = SRC) -> list[tuple[int, str, str]]:
    """(lines, file, name) of every function and method below ``root``, longest first."""
    rows = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                rows.append((node.end_lineno - start + 1, str(path.relative_to(root)), node.name))
    return sorted(rows, reverse=True)


def test_functions_fit_on_a_screen() -> None:
    rows = function_lengths()
    too_long = [r for r in rows if r[0] > FUNCTION_LIMIT]
    assert not too_long, too_long
    train = [r for r in rows if r[1:] == ("engine/trainer.py", "train")]
    assert train and train[0][0] <= TRAIN_LIMIT, train


def test_commands_are_thin() -> None:
    lengths = {p.name: len(p.read_text().splitlines())
               for p in (SRC / "commands").glob("*.py")}
    too_long = {n: k for n, k in lengths.items() if k > COMMAND_LIMIT}
    assert not too_long, too_long


def test_only_train_is_imported_from_the_trainer() -> None:
    imported = set()
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "tests").rglob("*.py"),
                 *(ROOT / "benchmarks").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "celseg.engine.trainer":
                imported.update((str(path.relative_to(ROOT)), a.name) for a in node.names)
    assert imported and {name for _, name in imported} == {"train"}, imported


if __name__ == "__main__":  # python tests/test_code_shape.py: the longest functions
    for lines, file, name in function_lengths()[:15]:
        print(f"{lines:4d}  {file}:{name}")
