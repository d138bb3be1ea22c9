"""The fixed cost of everything after the backbone, against what the 1.3x inference target
leaves for it.

    OMP_NUM_THREADS=1 python benchmarks/bench_head_floor.py [--ckpt RUN | --set K=V ...]
        [--repeats 40] [--out F.json]

At batch 1 and image sizes 32, 64 and 128 px, timed in alternation in one process:

- ``backbone_ms``: the backbone's forward (the reference of bench_speed's inference ratio);
- ``after_ms``: everything after it as inference runs it (``Segmenter.decode``: the traced
  head, the text classifier; then the labels, segmenter protocol), from the backbone's features
  of the same image;
- ``operators``: the aten operators the head's frozen trace runs (one call each).

At 32 px the head's memory levels are 1 x 1, 2 x 2 and 4 x 4 tokens and its mask features 8 x 8,
so its arithmetic is negligible and ``after_ms`` is the cost of running its operators at all.
The target "inference <= 1.3x the backbone" leaves ``budget_ms`` = 0.3 x the backbone's
128 px forward for everything after it; ``floor_within_budget`` says whether the 32 px floor
fits in it. Where it does not, no kernel speed-up reaches the target at 128 px, batch 1: only
fewer operators (a smaller head) can.
"""

from __future__ import annotations

import torch
from bench_speed import _batch, _inference_model, alternating_ms
from bench_traced_head import bench_args
from bench_train import write_rows

from celseg.config import EvalConfig
from celseg.engine.protocol import build_inference

SIZES = (32, 64, 128)
TARGET = 1.3  # inference <= 1.3x the backbone's forward


def trace_operators(model) -> int:
    """The aten operators in the head's frozen trace(s) (after a traced call)."""
    traces = [t for t in model.traced_head.traces.values() if t is not None]
    if not traces:
        raise RuntimeError("the head was not traced (this torch cannot trace it)")
    return sum(1 for n in traces[-1].graph.nodes() if n.kind().startswith("aten::"))


@torch.no_grad()  # as the library infers
def measure(ckpt: str | None, repeats: int, sizes=SIZES, extra: tuple[str, ...] = ()) -> dict:
    """{"rows": one per size, "budget_ms", "floor_ms", "floor_within_budget"}; the budget is
    taken at the largest size, the floor at the smallest."""
    dev = torch.device("cpu")
    model, emb, names = _inference_model(dev, ckpt, extra)
    path = build_inference(model, EvalConfig(ensemble=False), names, names[:18], [], None, dev)
    fns, operators = {}, {}
    for size in sizes:
        x = _batch(0, 1, size)[0]
        feats = model.backbone.forward_features(x)

        def after(feats=feats, size=size):
            return path.labels(model.decode(feats, emb), None, (size, size))

        model.traced_head.seen.clear()
        for _ in range(model.traced_head.after):  # trace this size now
            after()
        operators[size] = trace_operators(model)
        fns[f"backbone{size}"] = lambda x=x: model.backbone.forward_features(x)
        fns[f"after{size}"] = after
    ms = alternating_ms(fns, repeats)
    rows = [{"size": s, "batch": 1, "weights": "trained" if ckpt else "random",
             "backbone_ms": ms[f"backbone{s}"], "after_ms": ms[f"after{s}"],
             "operators": operators[s]} for s in sizes]
    budget = (TARGET - 1) * rows[-1]["backbone_ms"]
    floor = rows[0]["after_ms"]
    return {"rows": rows, "overrides": list(extra), "budget_size": sizes[-1], "budget_ms": budget,
            "floor_size": sizes[0], "floor_ms": floor, "floor_within_budget": floor <= budget}


def main() -> None:
    args = bench_args(__doc__, repeats=40, overrides=True)
    result = measure(args.ckpt, args.repeats, extra=tuple(args.set))
    for r in result["rows"]:
        print(f"{r['size']} px, batch 1, {r['weights']} weights: backbone {r['backbone_ms']:.2f} "
              f"ms; after it {r['after_ms']:.2f} ms ({r['operators']} operators in the head)")
    print(f"the {TARGET}x target leaves {result['budget_ms']:.2f} ms after the backbone at "
          f"{result['budget_size']} px; the {result['floor_size']} px floor is "
          f"{result['floor_ms']:.2f} ms: "
          f"{'within' if result['floor_within_budget'] else 'over'} the budget")
    write_rows(args.out, [result])


if __name__ == "__main__":
    main()
