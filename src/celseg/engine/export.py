"""Exported models: a run as a self-contained folder that can be moved, shared and loaded anywhere.

Layout written by :func:`export_run` (``celseg export RUN OUT``)::

    OUT/README.md           model card: what it is, its vocabulary, metrics, how it was made,
                            licence (Hugging Face front matter)
    OUT/celseg_model.json   format marker: celseg version, where each VLM is
    OUT/config.yaml         the run's resolved config; VLM keys name folders inside OUT
    OUT/model.safetensors   the weights; metadata embed_dim, step, labelled_names, pseudo_names
    OUT/vocabulary.json     the training vocabulary and which names had (pseudo) labels
    OUT/metrics.json        the run's final evaluation, when it has one
    OUT/vlm/                a copy of the VLM folder (none when the VLM is a name or Hub id)

``load_segmenter`` reads such a folder like a run (``checkpoint.resolve_checkpoint`` finds
``model.safetensors``); :func:`localize` points the VLM keys at the folders inside it, wherever
it has been moved.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from celseg.config import Config
from celseg.errors import ModelLoadError

MARKER = "celseg_model.json"
WEIGHTS = "model.safetensors"
# config key -> folder inside the export holding a copy of that VLM
VLM_KEYS = {("model", "vlm"): "vlm", ("eval", "vlm"): "vlm_eval",
            ("eval", "two_stage_vlm"): "vlm_two_stage"}


def is_export(folder: str | Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def localize(cfg: Config, folder: str | Path) -> Config:
    """``cfg`` with every VLM key that names a folder inside the export ``folder`` made
    absolute (unchanged when ``folder`` is not an export)."""
    folder = Path(folder)
    if not is_export(folder):
        return cfg
    for (section, key), _ in VLM_KEYS.items():
        value = getattr(getattr(cfg, section), key)
        if value and not Path(value).is_absolute() and (folder / value).is_dir():
            part = dataclasses.replace(getattr(cfg, section), **{key: str(folder / value)})
            cfg = dataclasses.replace(cfg, **{section: part})
    return cfg


def resolved_vlm(value: str, key: str) -> tuple[str, Path | None]:
    """(value for the exported config, folder to copy or None) of one VLM key."""
    from celseg.vlm.registry import resolve_name

    name = resolve_name(value) if value else value
    path = Path(name).expanduser()
    if not name or name == "minilm":
        return name, None
    if path.is_dir():
        return name, path
    if path.exists() or name.startswith((".", "/", "~")) or len(name.split("/")) != 2:
        raise ModelLoadError(f"config key '{key}': {value!r} is not a model folder here; the "
                             "export needs the VLM the run was trained with")
    return name, None  # a Hub id: it stays an id


def vocabulary(run: Path, cfg: Config) -> dict:
    """The training vocabulary: every class name of the run's dataset (when that is on this
    machine), which had ground-truth labels, which only pseudo labels, which none."""
    from celseg.data.classes import load_classes
    from celseg.engine.checkpoint import label_names
    from celseg.errors import CelsegError

    labelled, pseudo = label_names(run, cfg)
    try:
        info = load_classes(cfg.data.root)
        names, dataset = list(info.names), info.dataset_name
    except (CelsegError, OSError):
        names, dataset = [*labelled, *[n for n in pseudo if n not in labelled]], ""
    had = set(labelled) | set(pseudo)
    return {"dataset": dataset, "setting": cfg.data.setting, "names": names,
            "labelled": labelled, "pseudo_labelled": pseudo,
            "unlabelled": [n for n in names if n not in had]}


def vlm_copies(cfg: Config) -> tuple[Config, dict[str, Path]]:
    """(the config to export, {folder inside the export: VLM folder to copy there}); one
    folder per distinct VLM folder, names and Hub ids kept as they are."""
    copies: dict[str, Path] = {}
    for (section, key), folder in VLM_KEYS.items():
        value, source = resolved_vlm(getattr(getattr(cfg, section), key), f"{section}.{key}")
        if source is not None:
            same = [f for f, s in copies.items() if s == source.resolve()]
            value = same[0] if same else folder
            copies[value] = source.resolve()
        part = dataclasses.replace(getattr(cfg, section), **{key: value})
        cfg = dataclasses.replace(cfg, **{section: part})
    return cfg, copies


def export_run(run: str | Path, out: str | Path, license_id: str = "mit",
               command: str = "") -> dict:
    """Write the export of ``run`` (a run folder, its checkpoints/ folder or weights file, or an
    export) to ``out``; returns the marker's content. The run is loaded first, so a run whose
    weights do not match its config is refused. The caller has claimed ``out``."""
    from safetensors.torch import load_file, save_file

    from celseg import __version__
    from celseg.config import save_config
    from celseg.engine.checkpoint import load_segmenter, read_metadata, resolve_checkpoint
    from celseg.io.atomic import atomic_paths, write_json, write_text

    weights, config_path = resolve_checkpoint(run)
    _, cfg = load_segmenter(weights)
    exported, copies = vlm_copies(cfg)
    vocab = vocabulary(config_path.parent, cfg)
    meta = read_metadata(weights)
    meta.update(labelled_names=json.dumps(vocab["labelled"]),
                pseudo_names=json.dumps(vocab["pseudo_labelled"]))
    out = Path(out)
    for folder, source in copies.items():
        shutil.copytree(source, out / folder, dirs_exist_ok=True)
    with atomic_paths(out / WEIGHTS) as (tmp,):
        save_file(load_file(str(weights)), str(tmp), metadata=meta)
    save_config(exported, out / "config.yaml")
    write_json(out / "vocabulary.json", vocab)
    metrics = _read_json(config_path.parent / "metrics.json")
    if metrics is not None:
        write_json(out / "metrics.json", metrics)
    vlm = exported.model.vlm
    vlm = f"`{vlm}/`, a copy of `{Path(cfg.model.vlm).name}`" if vlm in copies else f"`{vlm}`"
    write_text(out / "README.md", model_card(out.name, exported, vocab, metrics, license_id,
                                             command, vlm))
    marker = {"format": "celseg-model", "format_version": 1, "celseg_version": __version__,
              "weights": WEIGHTS, "vlm_folders": sorted(copies), "license": license_id,
              "step": meta.get("step")}
    write_json(out / MARKER, marker)  # last: a folder without it is not a finished export
    return marker


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def model_card(title: str, cfg: Config, vocab: dict, metrics: dict | None, license_id: str,
               command: str, vlm: str) -> str:
    """The README.md of an export (Hugging Face model card front matter); ``vlm`` describes
    the vision-language model in Markdown."""
    def names(key: str) -> str:
        return ", ".join(vocab[key]) or "(none)"

    rows = ["| metric | value |", "| --- | --- |"]
    for key, label in (("miou_seen", "mIoU seen"), ("miou_unseen", "mIoU unseen"),
                       ("hiou", "hIoU"), ("miou_all", "mIoU all"), ("pixel_acc", "pixel acc")):
        value = (metrics or {}).get(key)
        if isinstance(value, (int, float)):
            rows.append(f"| {label} | {value:.2f} |")
    table = "\n".join(rows) if len(rows) > 2 else "No evaluation was recorded with the run."
    return f"""---
license: {license_id}
library_name: celseg
pipeline_tag: image-segmentation
tags: [semantic-segmentation, zero-shot, open-vocabulary]
---

# {title}

A celseg zero-shot semantic segmenter ({cfg.model.mode}, backbone {cfg.model.backbone}).
It segments an image with any list of class names, embedded by the vision-language model
{vlm}.

```python
import celseg

model = celseg.load("{title}")  # this folder, or its Hub id
seg = model.segment("photo.jpg", ["cat", "sofa", "floor"])
```

## Training vocabulary

Dataset {vocab["dataset"] or "(not recorded)"}, setting {vocab["setting"]}.

- ground-truth labels: {names("labelled")}
- pseudo labels only: {names("pseudo_labelled")}
- no labels (unseen in training): {names("unlabelled")}

## Metrics

On the validation split of the training dataset, as `celseg evaluate` reports them
(percent; seen and unseen as in the vocabulary above).

{table}

## How it was made

Trained with `celseg train -c config.yaml` (config.yaml here is the run's resolved config; its
`data.root` must point at the dataset) and exported with `{command or "celseg export RUN OUT"}`.

## Licence

`{license_id}`. The weights build on EfficientNet-Lite0 (ImageNet) and all-MiniLM-L6-v2, or on
the vision-language model named above; their licences apply to those parts.
"""


def claim_export(run: str | Path, out: str | Path, overwrite: bool = False) -> None:
    """The output guard of ``celseg export``: ``out`` may not hold files celseg did not write
    (unless ``overwrite``), nor be or lie inside the run's files or its VLM folders."""
    from celseg.config import load_config
    from celseg.engine.checkpoint import resolve_checkpoint
    from celseg.io.outputs import OutputGuard

    _, config_path = resolve_checkpoint(run)
    cfg = localize(load_config(config_path), config_path.parent)
    vlm_copies(cfg)  # a VLM folder that is gone is named before anything is written
    guard = OutputGuard("export", overwrite=overwrite).read_checkpoint(run)
    for (section, key), _ in VLM_KEYS.items():
        guard.read_path(getattr(getattr(cfg, section), key))
    out = Path(out)
    files = [out / n for n in (MARKER, WEIGHTS, "config.yaml", "README.md", "vocabulary.json",
                               "metrics.json")]
    guard.claim(files=files, folders=[out])
