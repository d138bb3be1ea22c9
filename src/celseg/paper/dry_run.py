"""One config end to end at its real shapes, on a small dataset, with measurements.

:func:`dry_run` runs a config the way a user with the real data would, with the same functions
as ``make-data``, ``pseudo-label``, ``train``, ``evaluate`` and ``predict``:

1. writes a small raw dataset in the config's official format (``celseg.paper.fixtures``: a real
   VOC photo plus drawn images) and converts it with the project's converter;
2. writes unseen-class pseudo labels for its training images with the config's VLM (the
   transductive configs train on them);
3. trains ``steps`` optimiser steps at the config's crop size, queries, decoder depth,
   vocabulary and text encoder (the batch may be reduced), with the learning-rate schedule of
   the config's full run;
4. evaluates with the config's evaluation settings (sliding window included) under every
   protocol the run computes, and predicts the real photo with every class name.

The report (also written to ``OUT/report.json``) gives parameter counts, seconds per step and
peak memory at the measured batch, and the full schedule's projected wall time on this device,
scaled from the measured batch to the config's batch as if time grew linearly with it.

Weights: the config's hub models load online. Offline they cannot, and the run stops with an
error naming ``--random-init``, which builds the same architectures with random weights
(``celseg.paper.architectures``); the report then says so. Nothing falls back by itself.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from celseg.config import Config, apply_overrides, load_config
from celseg.errors import CelsegError, ModelLoadError
from celseg.paper import architectures, fixtures
from celseg.paper.measure import PeakMemory, cpu_seconds, parameter_counts, seconds_per_step

# data.root folder name -> dataset (as ``celseg make-data`` names it)
DATASETS = {"voc": "voc", "coco_stuff": "coco-stuff"}
# images in the real validation splits (VOC 2012 val, COCO val2017), for the evaluation estimate
REAL_VAL_IMAGES = {"voc": 1449, "coco-stuff": 5000}
PARTS = ("raw", "data", "pseudo_labels", "run", "predict")  # subfolders a dry run writes


@dataclass(frozen=True)
class DryRunRequest:
    config: str
    out: Path
    overrides: tuple[str, ...] = ()
    steps: int = 2
    batch: int = 0  # 0: the config's train.batch_size
    eval_images: int = 2  # validation images (the real photo first)
    random_init: bool = False
    dataset: str = ""  # "": from the name of the config's data.root
    device: str = "auto"
    pseudo_threshold: float = 0.5


def dataset_of(cfg: Config, name: str = "") -> str:
    """The dataset a config trains on: ``name`` when given, else from its data.root folder."""
    name = name or DATASETS.get(Path(cfg.data.root).name, "")
    if name not in fixtures.FIXTURES:
        raise CelsegError(
            f"cannot tell which dataset data.root={cfg.data.root!r} holds; pass --dataset "
            f"{' or '.join(fixtures.FIXTURES)} (the dry run writes that dataset's raw format)")
    return name


def check_request(req: DryRunRequest) -> None:
    for flag, value, low in (("--steps", req.steps, 2), ("--batch", req.batch, 0),
                             ("--eval-images", req.eval_images, 1)):
        if value < low:
            raise CelsegError(f"{flag} must be at least {low}, got {value} (the first step "
                              "warms up, so seconds per step need two)" if flag == "--steps"
                              else f"{flag} must be at least {low}, got {value}")


def resolve_weights(cfg: Config, random_init: bool) -> tuple[Config, dict[str, str]]:
    """``cfg`` with its hub models replaced by random-weight folders under ``random_init``;
    ``{hub id: folder}`` of those replaced."""
    if not random_init:
        return cfg, {}
    overrides, folders = architectures.random_init_overrides(cfg)
    return apply_overrides(cfg, overrides), folders


def dry_run(req: DryRunRequest) -> dict:
    """Run the dry run of ``req`` and return its report (see the module docstring)."""
    check_request(req)
    base = load_config(req.config, list(req.overrides))
    dataset = dataset_of(base, req.dataset)
    cfg, folders = resolve_weights(base, req.random_init)
    batch = req.batch or cfg.train.batch_size
    out = Path(req.out)
    for part in PARTS:  # a re-run replaces what the last one wrote, nothing else
        shutil.rmtree(out / part, ignore_errors=True)
    try:
        data_root = convert_fixture(dataset, out, batch, req.eval_images)
        pseudo = write_pseudo_labels(cfg, data_root, out / "pseudo_labels", req.pseudo_threshold)
        run_cfg = run_config(cfg, data_root, out, batch, req.device,
                             pseudo["dir"] if cfg.data.setting == "transductive" else "")
        trained = train_steps(run_cfg, req.steps)
        result = evaluate_and_predict(out / "run", data_root, dataset, out / "predict",
                                      req.eval_images, run_cfg.train.device)
    except ModelLoadError as exc:
        if req.random_init or not architectures.hub_models(cfg):
            raise
        raise ModelLoadError(f"{exc}\nThe config names hub models "
                             f"({', '.join(architectures.hub_models(cfg).values())}) whose "
                             "weights could not be loaded (offline?). Pass --random-init to "
                             "build the same architectures with random weights.") from exc
    return report(req, base, cfg, dataset, batch, folders, pseudo, trained, result)


def convert_fixture(dataset: str, out: Path, batch: int, eval_images: int) -> Path:
    """Raw fixture in ``OUT/raw`` (training images for one batch; each step is a new epoch
    when that is one image) converted to ``OUT/data``; returns the dataset root."""
    from celseg.data.convert import convert_dataset

    raw = fixtures.FIXTURES[dataset](out / "raw", batch, eval_images)
    convert_dataset(dataset, raw, out / "data", progress=False)
    return out / "data"


def write_pseudo_labels(cfg: Config, data_root: Path, out_dir: Path, threshold: float) -> dict:
    """Pseudo labels of the training split from the config's VLM, timed."""
    from celseg.engine.distributed import resolve_device
    from celseg.pseudo.generate import pseudo_label
    from celseg.vlm.loading import has_image_tower, load_vlm_cached

    vlm = load_vlm_cached(cfg.model.vlm)
    if not has_image_tower(vlm):
        if cfg.data.setting == "transductive":
            raise CelsegError(f"model.vlm={cfg.model.vlm!r} has no image tower to write the "
                              "pseudo labels a transductive config trains on")
        return {"dir": "", "skipped": f"model.vlm={cfg.model.vlm!r} has no image tower"}
    vlm.to(resolve_device(cfg.train.device))
    start = time.perf_counter()
    result = pseudo_label(vlm, data_root, out_dir, threshold, progress=False)
    return {"dir": str(out_dir), "images": result["images"],
            "seconds": round(time.perf_counter() - start, 2), "threshold": threshold}


def run_config(cfg: Config, data_root: Path, out: Path, batch: int, device: str,
               label_dir: str) -> Config:
    """The training config of the dry run: the fixture, ``batch`` and ``device``; data loaded
    in the main process; logs at step 1 and at the last step only (the timed window)."""
    return apply_overrides(cfg, [
        f"data.root={data_root}", f"data.label_dir={label_dir}", f"train.out_dir={out / 'run'}",
        f"train.batch_size={batch}", f"train.device={device}", "train.num_workers=0",
        "train.log_every=1000000000", "train.eval_every=0", "train.ckpt_every=0"])


def train_steps(cfg: Config, steps: int) -> dict:
    """``steps`` optimiser steps of ``cfg`` (schedule of its full run), timed and measured."""
    from celseg.engine.distributed import resolve_device
    from celseg.engine.trainer import train

    start, cpu = time.perf_counter(), cpu_seconds()
    with PeakMemory(resolve_device(cfg.train.device)) as peak:
        train(cfg, progress=False, max_steps=steps)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    per_step = seconds_per_step(Path(cfg.train.out_dir) / "log.jsonl", cfg.train.batch_size)
    return {"steps": steps, "seconds_per_step": round(per_step, 3),
            "images_per_second": round(cfg.train.batch_size / per_step, 3),
            "peak_memory_mib": round(peak.result["peak_mib"], 1),
            "memory": peak.result["kind"], "wall_seconds": round(wall, 1),
            "cpu_share": round(cpu / (wall * torch.get_num_threads()), 2),
            "load_average": round(os.getloadavg()[0], 1)}


def evaluate_and_predict(run_dir: Path, data_root: Path, dataset: str, predict_dir: Path,
                         eval_images: int, device_name: str) -> dict:
    """The trained run evaluated on ``eval_images`` validation images under every protocol its
    evaluation computes (timed without model loading), and the real photo predicted."""
    import dataclasses

    from celseg.api.model import Model
    from celseg.data.classes import load_classes
    from celseg.data.dataset import SegmentationDataset
    from celseg.data.transforms import build_eval_transform
    from celseg.engine.checkpoint import label_names, load_segmenter
    from celseg.engine.distributed import resolve_device
    from celseg.engine.evaluate_checkpoint import names_to_ids
    from celseg.engine.evaluator import evaluate
    from celseg.engine.predictor import Predictor
    from celseg.vlm.loading import class_text_embeddings, load_vlm_cached

    device = resolve_device(device_name)
    model, cfg = load_segmenter(run_dir, device)
    info = load_classes(data_root)
    val_set = SegmentationDataset(data_root, cfg.data.val_split, view="full",
                                  transform=build_eval_transform(cfg.data),
                                  max_items=eval_images, class_info=info)
    text_emb = class_text_embeddings(cfg.model.vlm, list(info.names), device)
    labelled, pseudo = label_names(run_dir, cfg)
    start = time.perf_counter()
    with PeakMemory(device) as peak:
        summary = evaluate(model, val_set, text_emb, info, cfg.eval, device, vlm=cfg.model.vlm,
                           labelled_ids=names_to_ids(info, labelled),
                           pseudo_ids=names_to_ids(info, pseudo))
    seconds = time.perf_counter() - start
    vlm = load_vlm_cached(cfg.model.vlm)
    predictor = Predictor(model, vlm, dataclasses.replace(cfg.eval, two_stage=False), vlm,
                          labelled, pseudo)
    photo = data_root / "images" / cfg.data.val_split / (
        f"{fixtures.real_photo_stem(dataset, cfg.data.val_split)}.jpg")
    written = Model(predictor, str(run_dir)).segment(photo, list(info.names)).save(predict_dir)
    protocols = {name: {k: _round(p[k]) for k in ("miou_seen", "miou_unseen", "hiou")}
                 for name, p in summary["protocols"].items()}
    return {
        "parameters": {**parameter_counts(model),
                       "backbone": sum(p.numel() for p in model.backbone.parameters())},
        "vlm_parameters": sum(p.numel() for p in vlm.parameters()),
        "evaluate": {"images": len(val_set), "seconds_per_image": round(seconds / len(val_set), 2),
                     "sliding_window": [cfg.eval.window_size, cfg.eval.window_stride]
                     if cfg.eval.sliding_window else None,
                     "protocol": summary["protocol"], "protocols": protocols,
                     "peak_memory_mib": round(peak.result["peak_mib"], 1)},
        "predict": {"image": str(photo), "labels": [str(p) for p in written],
                    "protocol": predictor.protocol, "class_names": len(info.names)},
    }


def _round(value: float) -> float | None:
    return None if value != value else round(value, 2)  # NaN (no such pixels) -> null


def report(req: DryRunRequest, base: Config, cfg: Config, dataset: str, batch: int,
           folders: dict[str, str], pseudo: dict, trained: dict, result: dict) -> dict:
    """The dry run's JSON report (see the module docstring)."""
    from celseg.engine.distributed import resolve_device

    per_step_full = trained["seconds_per_step"] * base.train.batch_size / batch
    device = resolve_device(req.device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"cpu, {torch.get_num_threads()} threads")
    m = cfg.model
    return {
        "config": str(req.config), "dataset": dataset, "device": where,
        "weights": ("random-init: the configs' architectures with random weights, built offline "
                    "from their real configurations" if req.random_init else "pretrained"),
        "random_init_folders": folders,
        "shapes": {"crop_size": cfg.data.crop_size, "num_queries": m.num_queries,
                   "dec_layers": m.dec_layers, "hidden_dim": m.hidden_dim,
                   "backbone": base.model.backbone, "text_encoder": base.model.vlm,
                   "vocabulary": result["predict"]["class_names"], "mode": m.mode,
                   "setting": cfg.data.setting},
        "batch": {"measured": batch, "config": base.train.batch_size},
        "parameters": result["parameters"], "vlm_parameters": result["vlm_parameters"],
        "train": trained,
        "projection": {
            "iterations": base.train.iterations,
            "seconds_per_step_at_config_batch": round(per_step_full, 2),
            "train_hours": round(per_step_full * base.train.iterations / 3600, 1),
            # a device shared with other jobs: the hours at the cores' full speed, as estimated
            # from the share of them the training got
            "train_hours_unshared": round(per_step_full * base.train.iterations / 3600 * (
                min(1.0, trained["cpu_share"]) if device.type == "cpu" else 1.0), 1),
            "val_images": REAL_VAL_IMAGES[dataset],
            "eval_hours": round(result["evaluate"]["seconds_per_image"]
                                * REAL_VAL_IMAGES[dataset] / 3600, 2),
            "assumes": "seconds per step grow linearly with the batch size"},
        "pseudo_labels": pseudo, "evaluate": result["evaluate"], "predict": result["predict"],
    }
