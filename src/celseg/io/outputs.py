"""Output guard: no command writes onto its inputs or over files celseg did not write.

A command declares what it reads (files, folders, a dataset, a checkpoint) and then claims its
outputs before it loads any model:

* an output may not be one of the inputs, nor lie inside an input folder, even with
  ``--overwrite`` (a dataset's ``images/``, ``annotations/`` and ``captions/`` are input
  folders; its root may hold outputs but may not be one);
* an existing file is replaced only when celseg wrote it, or with ``--overwrite``.

What celseg wrote is recorded in a small ``.celseg-outputs`` file in each output folder (one
name per line; ``.`` when a command owns the whole folder, as make-data and ablate do).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from celseg.errors import OutputError

MANIFEST = ".celseg-outputs"
WHOLE_FOLDER = "."
DATASET_INPUT_DIRS = ("images", "annotations", "captions")


def written_by_celseg(folder: Path) -> set[str]:
    """Names recorded in ``folder``'s manifest (empty when there is none)."""
    try:
        return {line.strip() for line in (folder / MANIFEST).read_text().splitlines()
                if line.strip()}
    except (OSError, UnicodeDecodeError):
        return set()


def _record(folder: Path, names: Iterable[str]) -> None:
    new = [n for n in dict.fromkeys(names) if n not in written_by_celseg(folder)]
    if not new:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / MANIFEST, "a") as fh:
            fh.write("".join(f"{n}\n" for n in new))
    except OSError as exc:
        raise OutputError(f"cannot write to {folder}: {exc.strerror or exc}") from None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


class OutputGuard:
    """The inputs of one command and the outputs it has claimed; see the module docstring."""

    def __init__(self, command: str, overwrite: bool = False) -> None:
        self.command = command
        self.overwrite = overwrite
        self._files: list[Path] = []
        self._dirs: list[Path] = []
        self._not_output: list[Path] = []  # may hold outputs, may not be one

    # ------------------------------------------------------------------ inputs
    def read_files(self, *paths: str | Path | None) -> OutputGuard:
        self._files += [Path(p).resolve() for p in paths if p]
        return self

    def read_dirs(self, *paths: str | Path | None) -> OutputGuard:
        self._dirs += [Path(p).resolve() for p in paths if p]
        return self

    def read_path(self, *paths: str | Path | None) -> OutputGuard:
        """A file or a folder, whichever it is (a model name that is neither is skipped)."""
        for p in paths:
            if p and Path(p).expanduser().is_dir():
                self.read_dirs(Path(p).expanduser())
            elif p and Path(p).expanduser().is_file():
                self.read_files(Path(p).expanduser())
        return self

    def read_dataset(self, root: str | Path) -> OutputGuard:
        root = Path(root)
        self.read_dirs(*(root / d for d in DATASET_INPUT_DIRS)).read_files(root / "classes.json")
        self._not_output.append(root.resolve())
        return self

    def read_checkpoint(self, ckpt: str | Path) -> OutputGuard:
        """The weights, training state and config.yaml of a checkpoint (ModelLoadError if
        there is none)."""
        from celseg.engine.checkpoint import STATE_NAME, resolve_checkpoint

        weights, config = resolve_checkpoint(ckpt)
        return self.read_files(weights, weights.with_name(STATE_NAME), config)

    def read_config(self, path: str | Path | None) -> OutputGuard:
        """A YAML config and the ``base`` it names."""
        if not path:
            return self
        import yaml

        path = Path(path)
        self.read_files(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, ValueError, yaml.YAMLError):
            return self  # load_config reports it
        if isinstance(raw, dict) and "base" in raw:
            self.read_files(path.parent / str(raw["base"]))
        return self

    # ------------------------------------------------------------------ outputs
    def _refuse_inputs(self, path: Path, shown: str | Path) -> None:
        resolved = path.resolve()
        if resolved in self._files:
            raise OutputError(f"{self.command}: refusing to write {shown}: it is one of the "
                              "inputs; choose another output path")
        for folder in self._dirs:
            if _inside(resolved, folder):
                raise OutputError(f"{self.command}: refusing to write {shown}: it is inside the "
                                  f"input folder {folder}; choose another output path")
        if resolved in self._not_output:
            raise OutputError(f"{self.command}: refusing to write into {shown} itself: it is "
                              "an input dataset folder; choose another output path")

    def _refuse_foreign(self, path: Path) -> None:
        if self.overwrite or not path.exists() and not path.is_symlink():
            return
        if path.is_dir():
            raise OutputError(f"{self.command}: output {path} is a folder, expected a file")
        ours = written_by_celseg(path.parent)
        if path.name not in ours and WHOLE_FOLDER not in ours:
            raise OutputError(f"{self.command}: refusing to replace {path}, which celseg did not "
                              "write; pass --overwrite to replace it, or choose another output")

    def _check_folder(self, path: Path) -> None:
        self._refuse_inputs(path, path)
        if path.exists() and not path.is_dir():
            raise OutputError(f"{self.command}: output {path} is a file, expected a folder")
        if path.is_dir() and not self.overwrite:
            ours = written_by_celseg(path)
            foreign = sorted(p.name for p in path.iterdir() if p.name != MANIFEST)
            if foreign and WHOLE_FOLDER not in ours:
                raise OutputError(
                    f"{self.command}: refusing to write into {path}: it holds files celseg did "
                    f"not write ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''});"
                    " pass --overwrite, or choose an empty or new folder")

    def claim(self, files: Iterable[str | Path] = (), folders: Iterable[str | Path] = (),
              record_files: bool = True) -> None:
        """Check every output file and folder, then record them (nothing is recorded when one
        is refused). ``record_files=False`` leaves the files to :meth:`record` once written,
        for single files whose manifest would sit beside them in a folder the command does not
        own."""
        files, folders = [Path(p) for p in files], [Path(p) for p in folders]
        seen: set[Path] = set()
        for path in files:
            key = path.resolve()
            if key in seen:
                raise OutputError(f"{self.command}: two outputs would both be written to {path}; "
                                  "give inputs with distinct names")
            seen.add(key)
            self._refuse_inputs(path, path)
            self._refuse_foreign(path)
        for folder in folders:
            self._check_folder(folder)
        for folder in folders:
            _record(folder, [WHOLE_FOLDER])
        if record_files:
            self.record(*files)

    def record(self, *paths: str | Path) -> None:
        """Note in each folder's manifest that celseg wrote these files."""
        by_folder: dict[Path, list[str]] = {}
        for path in map(Path, paths):
            by_folder.setdefault(path.parent, []).append(path.name)
        for folder, names in by_folder.items():
            _record(folder, names)
