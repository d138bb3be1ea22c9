"""Run every ablation variant over several seeds; each finished run is skipped on a re-run."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import torch

from celseg.ablation.variants import Variant
from celseg.config import Config, apply_override
from celseg.engine.checkpoint import has_checkpoint
from celseg.engine.trainer import train
from celseg.errors import CelsegError
from celseg.pseudo.generate import pseudo_label
from celseg.pseudo.self_train import relabel_from_checkpoint
from celseg.vlm.registry import load_vlm


@dataclass
class RunRecord:
    variant: Variant
    seed: int
    out_dir: Path
    summary: dict = field(default_factory=dict)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def ensure_pseudo_labels(vlm_name: str, data_root: str, out_dir: Path, threshold: float,
                         progress: bool = True) -> dict:
    """VLM pseudo labels for the training split (computed once, then read from report.json)."""
    report = _read_json(out_dir / "report.json")
    if report is not None:
        return report

    vlm = load_vlm(vlm_name)
    return pseudo_label(vlm, data_root, out_dir, threshold, progress=progress)


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


def _train_all(jobs_list: list[tuple[RunRecord, Config]], jobs: int, progress: bool) -> None:
    """Fill each record's summary: in this process one run at a time (``jobs`` 1), or in
    ``jobs`` worker processes, each with cores / jobs threads."""
    if jobs <= 1 or len(jobs_list) <= 1:
        for rec, cfg in jobs_list:
            print(f"[ablation] {rec.variant.title} | seed {rec.seed} -> {rec.out_dir}")
            rec.summary = _train(cfg, progress)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(_train_in_worker, cfg, threads): rec for rec, cfg in jobs_list}
        for rec, _ in jobs_list:
            print(f"[ablation] queued {rec.variant.title} | seed {rec.seed} -> {rec.out_dir} "
                  f"({jobs} at a time, {threads} thread(s) each)")
        for future in as_completed(futures):
            rec = futures[future]
            rec.summary = future.result()
            print(f"[ablation] finished {rec.variant.title} | seed {rec.seed}", flush=True)


def configure(base: Config, variant: Variant, seed: int, out_dir: Path,
              label_dir: str = "", vlm: str = "") -> Config:
    """The run's config. ``vlm`` (the ablation's VLM) becomes model.vlm when the base names the
    default: the LiT model's text tower is MiniLM itself, so training is unchanged, and its image
    tower gives the ensemble protocol."""
    cfg = base
    if vlm and cfg.model.vlm == "default":
        cfg = apply_override(cfg, f"model.vlm={vlm}")
    for item in variant.overrides:
        cfg = apply_override(cfg, item)
    cfg = apply_override(cfg, f"train.seed={seed}")
    cfg = apply_override(cfg, f"train.out_dir={out_dir}")
    return apply_override(cfg, f"data.label_dir={label_dir}")


def run_ablation(base: Config, variants: tuple[Variant, ...], seeds: list[int], out_root: Path,
                 pseudo_vlm: str, pseudo_threshold: float, self_train_threshold: float,
                 progress: bool = True, self_train_share: float = 0.5,
                 report_only: bool = False, seed_folders: bool = True, jobs: int = 1
                 ) -> tuple[list[RunRecord], dict]:
    """Train and evaluate every (variant, seed); returns the records and the pseudo-label report.

    Runs live in ``OUT/VARIANT/seedS`` (``OUT/VARIANT`` with ``seed_folders=False``: one seed).
    ``jobs`` > 1 trains that many runs at once in worker processes (self-training runs after
    the runs they relabel with); a run's numbers depend on its thread count, so compare runs
    made with the same ``jobs`` on the same machine.

    ``report_only``: train nothing; collect the (variant, seed) runs that have finished (their
    metrics.json), so a report can cover variants run with different numbers of seeds.
    """
    if jobs < 1:
        raise CelsegError(f"--jobs must be at least 1, got {jobs}")
    out_root.mkdir(parents=True, exist_ok=True)
    pseudo_report: dict = {}
    pseudo_dir = out_root / "pseudo_labels"
    if report_only:
        pseudo_report = _read_json(pseudo_dir / "report.json") or {}
    elif any(v.pseudo for v in variants):
        print(f"[ablation] pseudo labels from {pseudo_vlm} -> {pseudo_dir}")
        pseudo_report = ensure_pseudo_labels(pseudo_vlm, base.data.root, pseudo_dir,
                                             pseudo_threshold, progress)
    records: list[RunRecord] = []
    waves: tuple[list, list] = ([], [])  # self-training runs wait for the pseudo-label runs
    for seed in seeds:
        for variant in variants:
            run_dir = out_root / variant.key
            if seed_folders:
                run_dir = run_dir / f"seed{seed}"
            if report_only:
                summary = _read_json(run_dir / "metrics.json")
                if summary is not None:
                    records.append(RunRecord(variant, seed, run_dir, summary))
                continue
            records.append(RunRecord(variant, seed, run_dir))
            waves[int(variant.self_train)].append(records[-1])
    for wave in waves:
        jobs_list = []
        for rec in wave:
            label_dir = str(pseudo_dir) if rec.variant.pseudo else ""
            if rec.variant.self_train:
                label_dir = str(_self_train_labels(out_root, rec.seed, base.data.root,
                                                   self_train_threshold, self_train_share,
                                                   progress))
            jobs_list.append((rec, configure(base, rec.variant, rec.seed, rec.out_dir,
                                             label_dir, pseudo_vlm)))
        _train_all(jobs_list, jobs, progress)
    return records, pseudo_report


def _self_train_labels(out_root: Path, seed: int, data_root: str, threshold: float,
                       share: float, progress: bool) -> Path:
    """Relabel the training set with this seed's ``+ pseudo labels`` model (once), through its
    inference path (the ensemble) with class-balanced thresholds."""
    out = out_root / "selftrain_labels" / f"seed{seed}"
    if (out / "report.json").is_file():
        return out

    ckpt = out_root / "pseudo" / f"seed{seed}" / "checkpoints" / "last.safetensors"
    relabel_from_checkpoint(ckpt, data_root, out, threshold, progress=progress,
                            class_share=share)
    return out


METRICS = ("miou_seen", "miou_unseen", "hiou")
PROTOCOLS = ("segmenter", "ensemble", "vlm", "two_stage")


def _cell(values: list[float]) -> dict:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return {"mean": statistics.fmean(values) if values else math.nan,
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def aggregate(records: list[RunRecord]) -> dict[str, dict]:
    """Per variant: mean and sample std over seeds of seen / unseen / hIoU under the run's own
    protocol (top level) and under every protocol its evaluation computed (``protocols``)."""
    table: dict[str, dict] = {}
    for rec in records:
        row = table.setdefault(rec.variant.key, {"title": rec.variant.title, "runs": []})
        run = {"seed": rec.seed, "protocol": rec.summary.get("protocol", "segmenter"),
               **{k: rec.summary.get(k, math.nan)
                  for k in (*METRICS, "unseen_as_background", "seen_as_background")}}
        run["protocols"] = {p: {k: v.get(k, math.nan) for k in METRICS}
                            for p, v in rec.summary.get("protocols", {}).items()}
        row["runs"].append(run)
    for row in table.values():
        for key in (*METRICS, "unseen_as_background"):
            row[key] = _cell([r[key] for r in row["runs"]])
        row["protocols"] = {}
        for p in PROTOCOLS:
            runs = [r["protocols"][p] for r in row["runs"] if p in r["protocols"]]
            if runs:
                row["protocols"][p] = {k: _cell([r[k] for r in runs]) for k in METRICS}
    return table
