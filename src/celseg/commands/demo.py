"""``celseg demo --out DIR``: the whole main job on the embedded benchmark.

Steps (each skipped when its finished output exists, so a second run only prints results):

1. ``DIR/data``      generate the synthetic benchmark              (marker ``generate.json``)
2. ``DIR/vlm``       pretrain the default vision-language model     (``celseg_vlm.json``)
3. ``DIR/runs/V``    train each variant V of :data:`VARIANTS`       (``metrics.json``; an
                     interrupted run is resumed from its checkpoint)
4. ``DIR/overlays``  validation images: image | ground truth | each variant's prediction
5. print the results table and write ``DIR/results.md``
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from celseg.commands.options import add_set_argument, flatten_overrides

# variant name -> config file under configs/. Later variants (ranking, pseudo labels, ...) are
# one line each here.
VARIANTS: dict[str, str] = {
    "baseline": "synthetic_baseline.yaml",
    "ce": "synthetic_ce.yaml",
    "ce_ranking": "synthetic_ce_ranking.yaml",
}
# the peers' design next to the paper's inductive method; see docs/RESULTS.md for every variant
DEFAULT_VARIANTS = ("baseline", "ce_ranking")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated variants to train, from: {', '.join(VARIANTS)}")
    add_set_argument(parser, "config overrides applied to every variant (e.g. "
                             "train.iterations=100 for a quick look)")
    parser.add_argument("--seed", type=int, default=0, help="benchmark generation seed")
    parser.add_argument("--train-images", type=int, default=1200,
                        help="training images of the generated benchmark")
    parser.add_argument("--val-images", type=int, default=300,
                        help="validation images of the generated benchmark")
    parser.add_argument("--captions", type=int, default=3000,
                        help="image-caption pairs for pretraining the vision-language model")
    parser.add_argument("--size", type=int, default=128, help="image size of the benchmark (px)")
    parser.add_argument("--vlm-steps", type=int, default=None,
                        help="pretraining steps of the vision-language model (default: its own)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def config_path(name: str) -> Path:
    """A file of the repository's ``configs/`` folder (or ``./configs``)."""
    here = Path(__file__).resolve().parents[3] / "configs" / name
    for candidate in (here, Path.cwd() / "configs" / name):
        if candidate.is_file():
            return candidate
    from celseg.errors import CelsegError

    raise CelsegError(f"config {name} not found in {here.parent} or ./configs")


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _done(start: float, what: str = "done") -> None:
    print(f"   {what} in {time.perf_counter() - start:.0f} s", flush=True)


def make_data(out: Path, seed: int, progress: bool, sizes: dict | None = None) -> Path:
    from celseg.data.synthetic import generate

    data = out / "data"
    marker = data / "generate.json"
    t = _step("1/5 benchmark data")
    if marker.is_file():
        print(f"   cached: {data}")
        return data
    stats = generate(data, seed=seed, progress=progress, **(sizes or {}))
    marker.write_text(json.dumps(stats, indent=1, default=str))
    _done(t, f"{stats.get('train')} train / {stats.get('val')} val images")
    return data


def pretrain_vlm(out: Path, data: Path, progress: bool, steps: int | None = None) -> Path:
    from celseg.cli import main as cli_main
    from celseg.errors import CelsegError

    vlm = out / "vlm"
    t = _step("2/5 default vision-language model")
    if (vlm / "celseg_vlm.json").is_file() and (vlm / "model.safetensors").is_file():
        print(f"   cached: {vlm}")
        return vlm
    rc = cli_main(["pretrain-vlm", "--data", str(data), "--out", str(vlm),
                   *([] if steps is None else ["--steps", str(steps)]),
                   *([] if progress else ["--no-progress"])])
    if rc != 0:
        raise CelsegError(f"pretrain-vlm failed with exit code {rc}")
    _done(t)
    return vlm


def train_variants(out: Path, data: Path, vlm: Path, variants: list[str], overrides: list[str],
                   progress: bool) -> dict[str, dict]:
    from celseg.config import load_config
    from celseg.engine.checkpoint import has_checkpoint
    from celseg.engine.trainer import train

    results = {}
    for i, name in enumerate(variants):
        run_dir = out / "runs" / name
        t = _step(f"3/5 train '{name}' ({i + 1}/{len(variants)})")
        metrics = run_dir / "metrics.json"
        if metrics.is_file():
            print(f"   cached: {metrics}")
        else:
            cfg = load_config(config_path(VARIANTS[name]), [
                f"data.root={data}", f"train.out_dir={run_dir}", f"model.vlm={vlm}", *overrides,
            ])
            train(cfg, resume=has_checkpoint(run_dir), progress=progress)
            _done(t)
        results[name] = json.loads(metrics.read_text())
    return results


def write_overlays(out: Path, data: Path, vlm: Path, variants: list[str], n: int = 6) -> Path:
    import numpy as np
    from PIL import Image

    from celseg.data.classes import load_classes
    from celseg.engine.predictor import Predictor
    from celseg.viz.overlay import colorize, legend_image, panel

    target = out / "overlays" / "val_panel.png"
    t = _step("4/5 overlays")
    if target.is_file():
        print(f"   cached: {target}")
        return target
    info = load_classes(data)
    predictors = {}
    for v in variants:  # each variant under both protocols
        for ensemble in (False, True):
            p = Predictor.from_checkpoint(out / "runs" / v, ensemble=ensemble)
            predictors[f"{v} ({p.protocol})"] = p
    names = sorted(p.stem for p in (data / "images" / "val").iterdir())[:n]
    rows, shown = [], set()
    for name in names:
        image_path = next((data / "images" / "val").glob(f"{name}.*"))
        image = np.asarray(Image.open(image_path).convert("RGB"))
        gt = np.asarray(Image.open(data / "annotations" / "val" / f"{name}.png"))
        row = [image, colorize(gt, info.palette)]
        shown.update(int(i) for i in np.unique(gt) if i != info.ignore_index)
        for predictor in predictors.values():
            pred = predictor.segment(image, list(info.names))
            shown.update(int(i) for i in np.unique(pred))
            row.append(colorize(pred, info.palette))
        rows.append(row)
    target.parent.mkdir(parents=True, exist_ok=True)
    panel(rows, ["image", "ground truth", *predictors]).save(target)
    legend = legend_image(list(info.names), info.palette, sorted(shown), marked=info.unseen_ids)
    Image.fromarray(legend).save(target.with_name("legend.png"))
    _done(t, f"wrote {target}")
    return target


def results_table(results: dict[str, dict]) -> str:
    """One row per variant and protocol (the segmenter alone, then the ensemble)."""
    def f(v: object) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"

    lines = ["| variant | protocol | seen mIoU | unseen mIoU | hIoU | unseen -> no-object % |",
             "|---|---|---:|---:|---:|---:|"]
    for name, s in results.items():
        protocols = s.get("protocols") or {s.get("protocol", "segmenter"): s}
        for protocol in ("segmenter", "ensemble", "vlm", "two_stage"):
            p = protocols.get(protocol)
            if p is None:
                continue
            bg = f(s.get("unseen_as_background")) if protocol == "segmenter" else ""
            lines.append(f"| {name} | {protocol} | {f(p.get('miou_seen'))} | "
                         f"{f(p.get('miou_unseen'))} | {f(p.get('hiou'))} | {bg} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from celseg.errors import CelsegError

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise CelsegError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    out = Path(args.out)
    start = time.perf_counter()
    progress = not args.no_progress
    sizes = dict(n_train=args.train_images, n_val=args.val_images, n_captions=args.captions,
                 size=args.size)
    for flag, value in (("--train-images", args.train_images), ("--val-images", args.val_images),
                        ("--captions", args.captions), ("--size", args.size)):
        if value < 1:
            raise CelsegError(f"{flag} must be at least 1, got {value}")
    data = make_data(out, args.seed, progress, sizes)
    vlm = pretrain_vlm(out, data, progress, args.vlm_steps)
    results = train_variants(out, data, vlm, variants, flatten_overrides(args.overrides),
                             progress)
    panel_path = write_overlays(out, data, vlm, variants)
    _step("5/5 results (validation split, all class names as vocabulary)")
    table = results_table(results)
    print(table)
    (out / "results.md").write_text(
        "# celseg demo results\n\nValidation split of the synthetic benchmark, vocabulary = all "
        "class names. Protocols: `segmenter` = the segmenter's own classifier; `ensemble` = "
        "its geometric ensemble with the VLM's mask-pooled image features (the default); `vlm` "
        f"= the VLM branch alone.\n\n{table}\n\nOverlays: {panel_path}\n"
    )
    print(f"\noverlays: {panel_path}\nresults:  {out / 'results.md'}\n"
          f"total {time.perf_counter() - start:.0f} s")
    return 0
