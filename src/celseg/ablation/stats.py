"""The ablation's numbers: means and spreads over splits x seeds, and the claims across splits.

Every cell is ``{"mean", "std", "n"}``: the mean and the sample standard deviation (0 for one
value) of the runs' values, NaN (an absent class or protocol) left out.

- pooled (a variant's top level): over every (split, seed) run of the variant;
- per split (``row["splits"][SPLIT]``): over that split's seeds;
- a claim "A beats B" on a split: the difference of A's and B's means over that split's seeds;
  across splits, the number of splits where the difference is above 0, and the mean and sample
  standard deviation of the per-split differences.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

METRICS = ("miou_seen", "miou_unseen", "hiou")
PROTOCOLS = ("segmenter", "ensemble", "vlm", "two_stage")
# (better, worse, claim): the paper's three claims, then the ablation's two further questions
CLAIMS = (
    ("background_free", "baseline", "Claim 1: background-free beats the background-embedding "
                                    "baseline"),
    ("ranking", "background_free", "Claim 2: the ranking loss adds to background-free"),
    ("pseudo", "ranking", "Claim 3: pseudo labels beat inductive training (background-free + "
                          "ranking)"),
    ("ranking_all", "background_free", "Ranking over all names (unseen names, no unseen labels) "
                                       "adds to background-free"),
    ("selftrain", "pseudo", "Self-training adds to pseudo labels"),
)


def cell(values: list[float | None]) -> dict:
    """Mean, sample std and count of ``values`` without the missing ones (None, NaN)."""
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    return {"mean": statistics.fmean(kept) if kept else math.nan,
            "std": statistics.stdev(kept) if len(kept) > 1 else 0.0, "n": len(kept)}


def run_row(summary: dict, seed: int, split: str) -> dict:
    """One run's numbers (its metrics.json ``summary``) under its own protocol and every other
    protocol its evaluation computed."""
    return {"seed": seed, "split": split, "protocol": summary.get("protocol", "segmenter"),
            **{k: summary.get(k, math.nan)
               for k in (*METRICS, "unseen_as_background", "seen_as_background")},
            "protocols": {p: {k: v.get(k, math.nan) for k in METRICS}
                          for p, v in summary.get("protocols", {}).items()}}


def cells(runs: list[dict]) -> dict:
    """Cells of ``runs``: each metric under the runs' own protocol, the no-object share, and
    each metric under every protocol that some run computed."""
    out: dict[str, Any] = {k: cell([r[k] for r in runs])
                           for k in (*METRICS, "unseen_as_background")}
    out["protocols"] = {}
    for p in PROTOCOLS:
        under = [r["protocols"][p] for r in runs if p in r["protocols"]]
        if under:
            out["protocols"][p] = {k: cell([r[k] for r in under]) for k in METRICS}
    return out


def aggregate(records: list[Any]) -> dict[str, dict]:
    """Per variant key (in the records' order): ``title``, ``runs``, the pooled cells (module
    docstring) and ``splits`` {split name: cells over its seeds}. ``records`` have ``variant``
    (with ``key`` and ``title``), ``seed``, ``split`` and ``summary``."""
    runs: dict[str, list[dict]] = {}
    titles: dict[str, str] = {}
    for rec in records:
        runs.setdefault(rec.variant.key, []).append(run_row(rec.summary, rec.seed, rec.split))
        titles[rec.variant.key] = rec.variant.title
    table = {}
    for key, rows in runs.items():
        splits = list(dict.fromkeys(r["split"] for r in rows))
        table[key] = {"title": titles[key], "runs": rows, **cells(rows),
                      "splits": {s: cells([r for r in rows if r["split"] == s]) for s in splits}}
    return table


def protocol_cell(cells_: dict, protocol: str, metric: str) -> dict:
    """The cell of ``metric`` under ``protocol`` (an empty one when not computed)."""
    return cells_.get("protocols", {}).get(protocol, {}).get(metric,
                                                            {"n": 0, "mean": math.nan,
                                                             "std": 0.0})


def paired_means(table: dict, first: str, second: str, protocol: str, metric: str,
                 second_protocol: str | None = None) -> dict[str, tuple[float, float]]:
    """{split: (first's mean over seeds, second's)} of ``metric`` on each split both variants
    ran on, ``second`` under ``second_protocol`` (default ``protocol``); {} when either is
    missing."""
    if first not in table or second not in table:
        return {}
    pairs = {}
    for split, mine in table[first]["splits"].items():
        a = protocol_cell(mine, protocol, metric)
        b = protocol_cell(table[second]["splits"].get(split) or {}, second_protocol or protocol,
                          metric)
        if a["n"] and b["n"]:
            pairs[split] = (a["mean"], b["mean"])
    return pairs


def claim_across_splits(table: dict, better: str, worse: str, protocol: str,
                        metric: str = "miou_unseen") -> dict | None:
    """"``better`` beats ``worse``" on each split both ran on: ``per_split`` {split: difference
    of the means over seeds}, ``held`` (splits with a difference above 0), ``k`` (splits
    compared), ``mean`` and ``std`` (sample) of the differences; None when nothing compares."""
    diffs = {split: a - b for split, (a, b) in
             paired_means(table, better, worse, protocol, metric).items()}
    if not diffs:
        return None
    values = list(diffs.values())
    return {"per_split": diffs, "held": sum(d > 0 for d in values), "k": len(values),
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def claims_across_splits(table: dict, protocols: tuple[str, ...] = ("segmenter", "ensemble"),
                         metrics: tuple[str, ...] = ("miou_unseen", "hiou")) -> list[dict]:
    """One entry per (claim, protocol): ``claim``, ``better``, ``worse``, ``protocol`` and, per
    metric, :func:`claim_across_splits` (None when not run)."""
    return [{"claim": text, "better": better, "worse": worse, "protocol": protocol,
             **{m: claim_across_splits(table, better, worse, protocol, m) for m in metrics}}
            for better, worse, text in CLAIMS for protocol in protocols]


def ratio_across_splits(table: dict, variant: str, reference: str, protocol: str,
                        metric: str, ref_protocol: str | None = None) -> dict | None:
    """``variant``'s mean over seeds divided by ``reference``'s (under ``ref_protocol``,
    default ``protocol``) on each split both ran on: ``per_split`` {split: ratio}, ``mean``
    (of the per-split ratios), ``min``, ``k``; None when nothing compares."""
    ratios = {split: a / b for split, (a, b) in
              paired_means(table, variant, reference, protocol, metric, ref_protocol).items()
              if b > 0}
    if not ratios:
        return None
    return {"per_split": ratios, "mean": statistics.fmean(ratios.values()),
            "min": min(ratios.values()), "k": len(ratios)}


# the zero-shot transfer targets: (title, variant, reference, protocol, reference protocol,
# metric, mean at least, every split at least); variant "*" = every inductive variant
TARGETS = (
    ("default protocol (ensemble) hIoU / oracle's", "*", "oracle", "ensemble", "ensemble",
     "hiou", 0.9, 0.8),
    ("segmenter alone unseen mIoU / its own VLM branch's", "*", "*", "segmenter", "vlm",
     "miou_unseen", 0.8, None),
)
INDUCTIVE_EXCLUDED = ("oracle", "pseudo", "selftrain")


def transfer_targets(table: dict) -> list[dict]:
    """One entry per (target, inductive variant that ran): :func:`ratio_across_splits` plus
    ``title``, ``variant``, ``mean_target``, ``split_target`` and ``met``."""
    out = []
    for title, variant, reference, protocol, ref_protocol, metric, mean_at, split_at in TARGETS:
        keys = [k for k in table if k not in INDUCTIVE_EXCLUDED] if variant == "*" else [variant]
        for key in keys:
            ratio = ratio_across_splits(table, key, key if reference == "*" else reference,
                                        protocol, metric, ref_protocol)
            if ratio is None:
                continue
            met = ratio["mean"] >= mean_at and (split_at is None or ratio["min"] >= split_at)
            out.append({"title": title, "variant": key, "mean_target": mean_at,
                        "split_target": split_at, "met": met, **ratio})
    return out
