"""Run every ablation variant over splits and seeds; each finished run is skipped on a re-run.

A run lives in ``OUT/VARIANT/SPLIT/seedS`` (``OUT/VARIANT`` for a flat layout: one split, one
seed, as the demo has). A split other than the dataset's own is applied through its view
(:mod:`celseg.ablation.split_data`); the pseudo labels of a split are made for its unseen
classes, in ``OUT/pseudo_labels/SPLIT``. Finished runs of earlier layouts and names are read
where the new folder has none: ``OUT/VARIANT/seedS`` and ``OUT/OLD_NAME/...`` for split 0, and
``OUT/pseudo_labels`` for its pseudo labels.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import torch

from celseg.ablation.split_data import split_root
from celseg.ablation.splits import UnseenSplit
from celseg.ablation.variants import Variant, old_names
from celseg.config import Config, apply_override, load_config
from celseg.data.classes import load_classes
from celseg.engine.checkpoint import has_checkpoint
from celseg.engine.trainer import train
from celseg.errors import CelsegError
from celseg.io.atomic import write_json
from celseg.pseudo.generate import pseudo_label
from celseg.pseudo.self_train import relabel_from_checkpoint
from celseg.vlm.registry import load_vlm


@dataclass
class RunRecord:
    variant: Variant
    seed: int
    out_dir: Path
    summary: dict = field(default_factory=dict)
    split: str = "split0"
    data_root: str = ""  # the split's dataset root ("" : the base config's)


@dataclass(frozen=True)
class PseudoSettings:
    """How the transductive variants get their labels: VLM pseudo labels (``vlm``, confidence
    ``threshold``), then self-training labels (``self_train_threshold``; each unseen class also
    keeps the most confident ``self_train_share`` of its own predicted pixels)."""

    vlm: str = ""
    threshold: float = 0.5
    self_train_threshold: float = 0.7
    self_train_share: float = 0.5


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def run_dir(out_root: Path, key: str, split: str, seed: int, flat: bool = False) -> Path:
    """The folder of a run: finished runs of earlier layouts and names first (module
    docstring), else ``OUT/VARIANT/SPLIT/seedS`` (``OUT/VARIANT`` when ``flat``)."""
    new = out_root / key if flat else out_root / key / split / f"seed{seed}"
    earlier = [] if split != "split0" else [
        out_root / k if flat else out_root / k / f"seed{seed}" for k in [key, *old_names(key)]]
    for folder in [new, *earlier]:
        if (folder / "metrics.json").is_file():
            return folder
    return new


def _train(cfg: Config, progress: bool) -> dict:
    summary = _read_json(Path(cfg.train.out_dir) / "metrics.json")
    if summary is not None:
        print(f"[ablation] cached: {cfg.train.out_dir}")
        return summary

    # an interrupted run resumes from its last checkpoint
    return train(cfg, resume=has_checkpoint(cfg.train.out_dir), progress=progress)


def _train_in_worker(cfg: Config, threads: int) -> dict:
    """One run in a worker process of :func:`run_ablation` (``jobs`` > 1), with its own number
    of intra-op threads, so that parallel runs do not oversubscribe the cores."""
    torch.set_num_threads(threads)
    return _train(cfg, progress=False)


def eval_changes(run_folder: Path, now: Config) -> list[str]:
    """``eval.KEY=VALUE`` for every evaluation key where ``now`` (the config a run trained
    today would have) differs from the run's saved config.yaml."""
    saved = load_config(Path(run_folder) / "config.yaml").eval
    return [f"eval.{f.name}={json.dumps(getattr(now.eval, f.name))}"
            for f in dataclasses.fields(now.eval)
            if getattr(now.eval, f.name) != getattr(saved, f.name)]


def re_evaluate(run_folder: Path, now: Config, progress: bool = False) -> dict:
    """Evaluate a finished run's final checkpoint again with the current code and the
    evaluation keys of ``now`` (:func:`eval_changes`), as the trainer's final evaluation of a
    run trained today would; keep the earlier summary as ``metrics.previous.json`` and write
    the new one, with ``re_evaluated`` (the changed keys), as ``metrics.json``. A run already
    evaluated again with the same keys is left as it is."""
    from celseg.engine.evaluate_checkpoint import evaluate_checkpoint

    run_folder = Path(run_folder)
    before = _read_json(run_folder / "metrics.json") or {}
    changes = eval_changes(run_folder, now)
    if before.get("re_evaluated") == changes:
        return before  # evaluated again with these keys already: a second call resumes
    summary = evaluate_checkpoint(run_folder, overrides=changes, progress=progress)
    for key in ("checkpoint", "data"):
        summary.pop(key, None)
    summary["step"] = before.get("step", summary.get("step"))
    summary["re_evaluated"] = changes
    if before:
        write_json(run_folder / "metrics.previous.json", before)
    write_json(run_folder / "metrics.json", summary)
    return summary


def _name(rec: RunRecord) -> str:
    return f"{rec.variant.title} | {rec.split} | seed {rec.seed}"


def _train_all(jobs_list: list[tuple[RunRecord, Config]], jobs: int, progress: bool) -> None:
    """Fill each record's summary: in this process one run at a time (``jobs`` 1), or in
    ``jobs`` worker processes, each with cores / jobs threads."""
    if jobs <= 1 or len(jobs_list) <= 1:
        for rec, cfg in jobs_list:
            print(f"[ablation] {_name(rec)} -> {rec.out_dir}")
            rec.summary = _train(cfg, progress)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(_train_in_worker, cfg, threads): rec for rec, cfg in jobs_list}
        for rec, _ in jobs_list:
            print(f"[ablation] queued {_name(rec)} -> {rec.out_dir} "
                  f"({jobs} at a time, {threads} thread(s) each)")
        for future in as_completed(futures):
            rec = futures[future]
            rec.summary = future.result()
            print(f"[ablation] finished {_name(rec)}", flush=True)


def configure(base: Config, variant: Variant, seed: int, out_dir: Path,
              label_dir: str = "", vlm: str = "", data_root: str = "") -> Config:
    """The run's config. ``vlm`` (the ablation's VLM) becomes model.vlm when the base names the
    default: the LiT model's text tower is MiniLM itself, so training is unchanged, and its image
    tower gives the ensemble protocol. ``data_root``: the split's dataset root."""
    cfg = base
    if vlm and cfg.model.vlm == "default":
        cfg = apply_override(cfg, f"model.vlm={vlm}")
    if data_root:
        cfg = apply_override(cfg, f"data.root={data_root}")
    for item in variant.overrides:  # after data.root: a variant may train on other data
        cfg = apply_override(cfg, item)
    cfg = apply_override(cfg, f"train.seed={seed}")
    cfg = apply_override(cfg, f"train.out_dir={out_dir}")
    return apply_override(cfg, f"data.label_dir={label_dir}")


def pseudo_labels(data_root: str, out_root: Path, split: str, pseudo: PseudoSettings,
                  progress: bool = True, compute: bool = True) -> tuple[Path, dict]:
    """The split's VLM pseudo-label folder and report (made once, then read from its
    report.json; with ``compute`` False only read, an empty report when absent)."""
    folder = out_root / "pseudo_labels" / split
    if split == "split0" and not (folder / "report.json").is_file() \
            and (out_root / "pseudo_labels" / "report.json").is_file():
        folder = out_root / "pseudo_labels"  # the layout before splits
    report = _read_json(folder / "report.json")
    if report is not None or not compute:
        return folder, report or {}
    print(f"[ablation] pseudo labels of {split} from {pseudo.vlm} -> {folder}")
    return folder, pseudo_label(load_vlm(pseudo.vlm), data_root, folder, pseudo.threshold,
                                progress=progress)


def _self_train_labels(rec: RunRecord, out_root: Path, pseudo: PseudoSettings, flat: bool,
                       progress: bool) -> Path:
    """Relabel the split's training set with this seed's ``+ pseudo labels`` model (once),
    through its inference path (the ensemble) with class-balanced thresholds."""
    out = out_root / "selftrain_labels" / rec.split / f"seed{rec.seed}"
    legacy = out_root / "selftrain_labels" / f"seed{rec.seed}"
    if rec.split == "split0" and (legacy / "report.json").is_file():
        return legacy
    if (out / "report.json").is_file():
        return out

    model = run_dir(out_root, "pseudo", rec.split, rec.seed, flat)
    relabel_from_checkpoint(model / "checkpoints" / "last.safetensors", rec.data_root, out,
                            pseudo.self_train_threshold, progress=progress,
                            class_share=pseudo.self_train_share)
    return out


def run_ablation(base: Config, variants: tuple[Variant, ...], seeds: list[int], out_root: Path,
                 pseudo: PseudoSettings, splits: tuple[UnseenSplit, ...] = (), *,
                 progress: bool = True, report_only: bool = False, flat: bool = False,
                 jobs: int = 1, again: bool = False) -> tuple[list[RunRecord], dict[str, dict]]:
    """Train and evaluate every (split, variant, seed); returns the records and each split's
    pseudo-label report. ``splits`` (default: the dataset's own split) are applied to
    ``base.data.root`` (module docstring).

    ``jobs`` > 1 trains that many runs at once in worker processes (self-training runs after
    the runs they relabel with); a run's numbers depend on its thread count, so compare runs
    made with the same ``jobs`` on the same machine.

    ``report_only``: train nothing; collect the runs that have finished (their metrics.json),
    so a report can cover variants run with different numbers of seeds or splits. With
    ``again`` each of them is evaluated again first, with the evaluation keys it would be
    trained with now (:func:`re_evaluate`).
    """
    if jobs < 1:
        raise CelsegError(f"--jobs must be at least 1, got {jobs}")
    info = load_classes(base.data.root)
    splits = splits or (UnseenSplit("split0", tuple(info.names[i] for i in info.unseen_ids)),)
    out_root.mkdir(parents=True, exist_ok=True)
    records: list[RunRecord] = []
    reports: dict[str, dict] = {}
    waves: tuple[list, list] = ([], [])  # self-training runs wait for the pseudo-label runs
    label_dirs: dict[str, Path] = {}
    for split in splits:
        root = str(split_root(base.data.root, split, out_root / "data_splits"))
        if any(v.pseudo for v in variants):
            label_dirs[split.name], reports[split.name] = pseudo_labels(
                root, out_root, split.name, pseudo, progress, compute=not report_only)
        for seed in seeds:
            for variant in variants:
                rec = RunRecord(variant, seed, run_dir(out_root, variant.key, split.name, seed,
                                                       flat), split=split.name, data_root=root)
                if report_only:
                    rec.summary = _read_json(rec.out_dir / "metrics.json") or {}
                    if again and rec.summary:
                        print(f"[ablation] evaluating again: {_name(rec)}", flush=True)
                        now = configure(base, variant, seed, rec.out_dir, vlm=pseudo.vlm,
                                        data_root=root)
                        rec.summary = re_evaluate(rec.out_dir, now, progress)
                    records += [rec] if rec.summary else []
                    continue
                records.append(rec)
                waves[int(variant.self_train)].append(rec)
    for wave in waves:
        jobs_list = []
        for rec in wave:
            label_dir = str(label_dirs[rec.split]) if rec.variant.pseudo else ""
            if rec.variant.self_train:
                label_dir = str(_self_train_labels(rec, out_root, pseudo, flat, progress))
            jobs_list.append((rec, configure(base, rec.variant, rec.seed, rec.out_dir,
                                             label_dir, pseudo.vlm, rec.data_root)))
        _train_all(jobs_list, jobs, progress)
    return records, reports
