"""The demo: the whole main job on the embedded benchmark, each finished step skipped on a re-run.

1. ``OUT/data``      generate the synthetic benchmark              (marker ``generate.json``),
   ``OUT/data_ov``   and the caption split of the second world (``--variant ov``)
2. ``OUT/vlm``       pretrain the default vision-language model on both worlds' captions, the
                     analogue of a VLM's web-scale pretraining   (``celseg_vlm.json``)
3. ``OUT/runs/V``    the ablation runner, one seed, the demo's variants (``metrics.json``; an
                     interrupted run is resumed from its checkpoint)
4. ``OUT/overlays``  validation images: image | ground truth | each variant under both protocols
5. the results table, also written to ``OUT/results.md``
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from celseg.ablation.figure import figure
from celseg.ablation.packaged import config_path
from celseg.ablation.runner import PseudoSettings, run_ablation
from celseg.ablation.variants import Variant, current_name, select
from celseg.config import load_config
from celseg.data.synthetic import generate
from celseg.errors import CelsegError
from celseg.vlm.config import VLMConfig
from celseg.vlm.pretrain import pretrain

# the ablation's variants the demo can train (its rows equal the ablation's split 0, seed 0)
VARIANTS = ("baseline", "background_free", "ranking")
# the peers' design next to the paper's inductive method; see docs/RESULTS.md for every variant
DEFAULT_VARIANTS = ("baseline", "ranking")


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _done(start: float, what: str = "done") -> None:
    print(f"   {what} in {time.perf_counter() - start:.0f} s", flush=True)


def make_data(out: Path, seed: int, progress: bool, sizes: dict | None = None,
              workers: int = 1) -> tuple[Path, Path]:
    """``OUT/data``: the generated benchmark (``sizes``: ``generate``'s size arguments), and
    ``OUT/data_ov``: the second world's caption split (for the VLM; no segmentation images).
    ``workers`` processes render them (the images do not depend on it)."""
    t = _step("1/5 benchmark data")
    sizes = dict(sizes or {})
    second = dict(sizes, n_train=0, n_val=0)
    for folder, variant, kwargs in (("data", "", sizes), ("data_ov", "ov", second)):
        marker = out / folder / "generate.json"
        if marker.is_file():
            print(f"   cached: {out / folder}")
            continue
        stats = generate(out / folder, seed=seed, progress=progress, variant=variant,
                         workers=workers, **kwargs)
        marker.write_text(json.dumps(stats, indent=1, default=str))
        _done(t, f"{folder}: {stats.get('train')} train / {stats.get('val')} val images, "
                 f"{stats.get('captions', kwargs.get('n_captions'))} captions")
    return out / "data", out / "data_ov"


def pretrain_vlm(out: Path, roots: tuple[Path, ...], progress: bool,
                 steps: int | None = None) -> Path:
    """``OUT/vlm``: the default vision-language model pretrained on the captions of ``roots``
    (a cached model pretrained on other data is an error, not silently reused)."""
    vlm = out / "vlm"
    t = _step("2/5 default vision-language model")
    meta = vlm / "celseg_vlm.json"
    if meta.is_file() and (vlm / "model.safetensors").is_file():
        trained_on = json.loads(meta.read_text()).get("data")
        trained_on = [trained_on] if isinstance(trained_on, str) else list(trained_on or [])
        if sorted(Path(p).name for p in trained_on) != sorted(r.name for r in roots):
            raise CelsegError(f"{vlm} was pretrained on {trained_on}, not on "
                              f"{list(map(str, roots))}; remove it (or use a new --out) to "
                              "pretrain it again")
        print(f"   cached: {vlm}")
        return vlm
    cfg = VLMConfig() if steps is None else dataclasses.replace(VLMConfig(), steps=steps)
    summary = pretrain(list(roots), vlm, cfg, progress=progress)
    print(json.dumps(summary))
    print(f"saved to {vlm} (load with --vlm {vlm})")
    _done(t)
    return vlm


def demo_variants(names: list[str]) -> tuple[Variant, ...]:
    """The ablation's variants named by ``names`` (old names read through the alias table)."""
    unknown = [n for n in names if current_name(n) not in VARIANTS]
    if unknown or not names:
        raise CelsegError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    return select(names)


def run_demo(out: Path, names: list[str], overrides: list[str], seed: int = 0,
             sizes: dict | None = None, vlm_steps: int | None = None,
             progress: bool = True, jobs: int = 1) -> str:
    """Steps 1-5 (module docstring); returns the results table. ``jobs``: variants trained
    at once (``run_ablation``), and processes rendering the data."""
    start = time.perf_counter()
    variants = demo_variants(names)
    data, data_ov = make_data(out, seed, progress, sizes, workers=jobs)
    vlm = pretrain_vlm(out, (data, data_ov), progress, vlm_steps)
    _step("3/5 train " + ", ".join(f"'{n}'" for n in names))
    base = load_config(config_path("synthetic.yaml"), [f"data.root={data}", *overrides])
    records, _ = run_ablation(base, variants, [0], out / "runs", PseudoSettings(str(vlm)),
                              progress=progress, flat=True, jobs=jobs)
    t = _step("4/5 overlays")
    panel_path = out / "overlays" / "val_panel.png"
    if panel_path.is_file():
        print(f"   cached: {panel_path}")
    else:
        figure(records, str(data), panel_path, n_images=6, ensembles=(False, True))
        _done(t, f"wrote {panel_path}")
    _step("5/5 results (validation split, all class names as vocabulary)")
    table = results_table({rec.variant.key: rec.summary for rec in records})
    print(table)
    (out / "results.md").write_text(
        "# celseg demo results\n\nValidation split of the synthetic benchmark, vocabulary = all "
        "class names. Protocols: `segmenter` = the segmenter's own classifier; `ensemble` = "
        "its geometric ensemble with the VLM's mask-pooled image features (the default); `vlm` "
        f"= the VLM branch alone.\n\n{table}\n\nOverlays: {panel_path}\n"
    )
    print(f"\noverlays: {panel_path}\nresults:  {out / 'results.md'}\n"
          f"total {time.perf_counter() - start:.0f} s")
    return table


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
