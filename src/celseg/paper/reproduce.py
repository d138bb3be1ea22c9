"""Raw VOC / COCO-Stuff archives to the paper's seen / unseen / hIoU table.

:func:`reproduce` runs what ``docs/REAL_BENCHMARKS.md`` describes, in one resumable job:

1. converts the raw download into ``OUT/data`` (``celseg make-data``; converted images are
   skipped on a re-run);
2. trains the paper's four variants of one model family (``configs/paper/``: the no-object
   baseline and class enhancement, inductive and transductive) with the embedded ablation's
   runner (:func:`celseg.ablation.runner.run_ablation`), which writes the unseen-class pseudo
   labels of the configs' CLIP once, reads a finished run's ``metrics.json`` back and resumes an
   interrupted run from its last checkpoint;
3. returns the seen / unseen / hIoU of every variant under the segmenter alone and under
   FC-CLIP's ensemble (both from each run's final evaluation), and :func:`markdown` puts the
   peers' published numbers beside them (``celseg/data/published_zero_shot.json``).

A variant is its config file read as ``--set`` items over the family's base config; the run
folder, pseudo-label folder and seed are the runner's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from celseg.ablation.variants import Variant
from celseg.config import Config, apply_overrides, load_config
from celseg.errors import CelsegError

PAPER = Path(__file__).resolve().parent.parent / "configs" / "paper"
PUBLISHED = Path(__file__).resolve().parent.parent / "data" / "published_zero_shot.json"
DATASETS = {"voc": "voc", "coco-stuff": "coco_stuff"}  # make-data name -> config prefix
FAMILIES = {"resnet": "", "clip": "_clip"}  # model family -> config infix
VARIANTS = (("baseline_inductive", "no-object baseline, inductive"),
            ("ranking_inductive", "class enhancement, inductive"),
            ("baseline_transductive", "no-object baseline + pseudo labels"),
            ("ranking_transductive", "class enhancement + pseudo labels"))
RUNNER_KEYS = ("train.out_dir", "data.label_dir", "train.seed")  # set by the runner
PROTOCOLS = ("segmenter", "ensemble")


def config_files(dataset: str, family: str) -> tuple[Path, list[Path]]:
    """(base config, the four variant configs) of a dataset and model family."""
    if dataset not in DATASETS:
        raise CelsegError(f"reproduce: unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    if family not in FAMILIES:
        raise CelsegError(f"reproduce: unknown --family {family!r}; known: {', '.join(FAMILIES)}")
    prefix = f"{DATASETS[dataset]}{FAMILIES[family]}"
    return PAPER / f"{prefix}_base.yaml", [PAPER / f"{prefix}_{key}.yaml" for key, _ in VARIANTS]


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def paper_variant(path: Path, title: str, key: str) -> Variant:
    """The variant of a paper config file: its keys (not its base's) as ``--set`` items, the
    runner's own keys left out; transductive configs train on the pseudo labels."""
    raw = yaml.safe_load(path.read_text()) or {}
    items = tuple(f"{section}.{k}={_text(v)}" for section, values in raw.items()
                  if section != "base" for k, v in values.items()
                  if f"{section}.{k}" not in RUNNER_KEYS)
    transductive = (raw.get("data") or {}).get("setting") == "transductive"
    return Variant(key, title, items, pseudo=transductive)


def reproduce(dataset: str, src: Path, out: Path, family: str = "resnet",
              overrides: list[str] | None = None, seeds: int = 1, random_init: bool = False,
              pseudo_threshold: float = 0.5, progress: bool = True) -> dict:
    """Convert, label, train and evaluate (module docstring); returns ``{"dataset", "family",
    "seeds", "variants": ablation table rows, "pseudo_labels": report}``."""
    from celseg.ablation.runner import PseudoSettings, run_ablation
    from celseg.ablation.stats import aggregate
    from celseg.data.convert import convert_dataset
    from celseg.paper.dry_run import resolve_weights

    if seeds < 1:
        raise CelsegError(f"--seeds must be at least 1, got {seeds}")
    base_file, files = config_files(dataset, family)
    base: Config = load_config(base_file, overrides or [])
    base, folders = resolve_weights(base, random_init)
    data_root = Path(out) / "data"
    convert_dataset(dataset, Path(src), data_root, progress=progress)
    base = apply_overrides(base, [f"data.root={data_root}"])
    variants = tuple(paper_variant(f, title, key)
                     for f, (key, title) in zip(files, VARIANTS, strict=True))
    records, reports = run_ablation(
        base, variants, list(range(seeds)), Path(out) / "runs",
        PseudoSettings(vlm=base.model.vlm, threshold=pseudo_threshold),
        progress=progress, flat=seeds == 1)
    return {"dataset": dataset, "family": family, "seeds": seeds,
            "weights": "random-init" if random_init else "pretrained",
            "random_init_folders": folders, "variants": aggregate(records),
            "pseudo_labels": next(iter(reports.values()), {})}


def published(dataset: str) -> list[dict]:
    """The peers' published rows of ``dataset`` (``published_zero_shot.json``)."""
    return json.loads(PUBLISHED.read_text())[dataset]


def _cell(row: dict, metric: str, protocol: str) -> str:
    stat = row.get("protocols", {}).get(protocol, {}).get(metric)
    if not stat or math.isnan(stat["mean"]):
        return "-"
    return f"{stat['mean']:.1f}" + (f" ± {stat['std']:.1f}" if stat["n"] > 1 else "")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown(result: dict, command: str) -> str:
    """The reproduction's table and the peers' published numbers, as one markdown document."""
    ds, family = result["dataset"], result["family"]
    lines = [f"# {ds}: seen / unseen / hIoU (mIoU %)", "",
             f"`{command}`", "",
             f"Model family: {family}; weights: {result['weights']}; "
             f"{result['seeds']} seed(s) (mean ± sample std when more than one).", "",
             "| variant | segmenter seen | unseen | hIoU | ensemble seen | unseen | hIoU |",
             "|---|---|---|---|---|---|---|"]
    for row in result["variants"].values():
        cells = [_cell(row, m, p) for p in PROTOCOLS for m in ("miou_seen", "miou_unseen",
                                                               "hiou")]
        lines.append(f"| {row['title']} | " + " | ".join(cells) + " |")
    lines += ["", "Published (sources: docs/REAL_BENCHMARKS.md):", "",
              "| method | setting | backbone | seen | unseen | hIoU |", "|---|---|---|---|---|---|"]
    for p in published(ds):
        lines.append(f"| {p['method']} | {p['setting']} | {p['backbone'] or '-'} | "
                     f"{_number(p['seen'])} | {_number(p['unseen'])} | {_number(p['hiou'])} |")
    return "\n".join(lines) + "\n"
