"""EfficientNet-Lite0 with TF "same" padding done by the convolution (symmetric cases) against
padding the input first, timed in alternating pairs in one process.

    OMP_NUM_THREADS=1 python benchmarks/bench_same_padding.py [--out FILE.json]

Rows: the backbone's forward at 128 px batch 1 / 64 (the VLM's feature cache) and 512 px
batch 1, and forward + backward at 128 px batch 8 (a training step's backbone), BatchNorm
frozen as in training. Each pair runs both versions back to back (order alternating); the row
reports their medians and the median of the per-pair ratios new / old, which is robust to a
machine whose speed drifts. Also checks that both versions give the same outputs.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from bench_train import _batch, write_rows

from celseg.models.efficientnet_lite import Conv2dSame, EfficientNetLite0


def pad_first(self: Conv2dSame, x: torch.Tensor) -> torch.Tensor:
    """The previous Conv2dSame.forward: always pad the input, then convolve without padding."""
    (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
    ih, iw = x.shape[-2:]
    pad_h = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
    pad_w = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
    if pad_h or pad_w:
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
    return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


VERSIONS = {"old": pad_first, "new": Conv2dSame.forward}
ROWS = (("forward", 128, 1, 41), ("forward", 128, 64, 9), ("forward", 512, 1, 15),
        ("forward+backward", 128, 8, 21))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = EfficientNetLite0()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()

    def run(what: str, x: torch.Tensor) -> list[torch.Tensor]:
        if what == "forward":
            with torch.inference_mode():
                return list(model.forward_features(x).values())
        feats = model.forward_features(x)
        sum(f.mean() for f in feats.values()).backward()
        model.zero_grad(set_to_none=True)
        return [f.detach() for f in feats.values()]

    rows = []
    for what, size, batch, pairs in ROWS:
        x = _batch(0, batch, size)[0]
        outs = {}
        for name, forward in VERSIONS.items():
            Conv2dSame.forward = forward
            outs[name] = run(what, x)
        same = all(torch.equal(a, b) for a, b in zip(outs["old"], outs["new"], strict=True))
        times: dict[str, list[float]] = {"old": [], "new": []}
        for i in range(pairs):
            for name in ("old", "new") if i % 2 else ("new", "old"):
                Conv2dSame.forward = VERSIONS[name]
                start = time.perf_counter()
                run(what, x)
                times[name].append(time.perf_counter() - start)
        Conv2dSame.forward = VERSIONS["new"]
        median = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
        ratio = median([n / o for n, o in zip(times["new"], times["old"], strict=True)])
        rows.append({"what": what, "size": size, "batch": batch, "pairs": pairs,
                     "old_ms": 1000 * median(times["old"]), "new_ms": 1000 * median(times["new"]),
                     "ratio_new_old": ratio, "same_outputs": same})
        print(f"{what} {size} px batch {batch}: pad first {rows[-1]['old_ms']:.1f} ms, "
              f"conv pads {rows[-1]['new_ms']:.1f} ms, median pair ratio {ratio:.2f}, "
              f"same outputs: {same}")
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
