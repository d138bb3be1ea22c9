"""The matcher's points grouped by the mask pixel they read (the matcher now,
:func:`celseg.losses.matcher.group_by_pixel`) against reading every point (its earlier form,
:class:`EveryPointMatcher`, kept here as the reference), timed in alternation in one process.

    OMP_NUM_THREADS=1 python benchmarks/bench_matcher_points.py [--repeats 11] [--out F.json]

At 512 px with 100 queries (4 images) and at the training crop, 128 px with 16 queries (8
images); random logits and masks, segments rendered by the synthetic generator. Both draw the
same points (the same seed), so their assignments are compared too.
"""

from __future__ import annotations

import torch
from bench_speed import NAMES, _batch, alternating_ms
from bench_traced_head import bench_args
from bench_train import write_rows

from celseg.config import LossConfig
from celseg.losses.mask_terms import points_for, read_nearest, uniform_coords
from celseg.losses.matcher import HungarianMatcher, segments_at
from celseg.losses.targets import build_vocab_lut, labels_to_targets, labels_to_vocab

SETTINGS = ((512, 100, 4), (128, 16, 8))  # size, queries, images


class EveryPointMatcher(HungarianMatcher):
    """The matcher before session 8: the masks read at every point."""

    def points(self, masks, labels, label_map):
        coords = uniform_coords(masks.shape[0], points_for(self.num_points, masks.shape[-2:]),
                                masks.device)
        label_points = read_nearest(label_map[:, None], coords)[:, 0]
        tgt, weights = segments_at(label_points, labels, self.ignore_index)
        return read_nearest(masks, coords).float(), tgt, weights


def measure(repeats: int, settings=SETTINGS) -> list[dict]:
    lut = build_vocab_lut(list(range(len(NAMES))))
    num_points = LossConfig().num_points
    grouped = HungarianMatcher(num_points=num_points)
    every = EveryPointMatcher(num_points=num_points)
    rows = []
    for size, queries, images in settings:
        _, labels = _batch(0, images, size)
        targets = labels_to_targets(labels, lut, with_masks=False)
        label_map, valid = labels_to_vocab(labels, lut), labels != 255
        g = torch.Generator().manual_seed(0)
        outputs = {"pred_logits": torch.randn(images, queries, len(NAMES), generator=g),
                   "pred_masks": 4 * torch.randn(images, queries, size // 4, size // 4,
                                                 generator=g)}
        args = (outputs, targets, valid, label_map)
        assignments = []
        for matcher in (every, grouped):
            torch.manual_seed(0)
            assignments.append(matcher(*args))
        same = all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                   for a, b in zip(*assignments, strict=True))
        ms = alternating_ms({m: (lambda m=m, args=args: m(*args)) for m in (every, grouped)},
                            repeats)
        rows.append({"size": size, "queries": queries, "images": images,
                     "points": points_for(num_points, (size // 4, size // 4)),
                     "same_assignments": same, "every_point_ms_per_image": ms[every] / images,
                     "grouped_ms_per_image": ms[grouped] / images})
    return rows


def main() -> None:
    args = bench_args(__doc__, ckpt=False, repeats=11)
    for r in (rows := measure(args.repeats)):
        print(f"matcher {r['size']} px, {r['queries']} queries, {r['points']} points: every "
              f"point {r['every_point_ms_per_image']:.2f} ms/image, grouped by pixel "
              f"{r['grouped_ms_per_image']:.2f} ms/image "
              f"({r['grouped_ms_per_image'] / r['every_point_ms_per_image']:.2f}x); "
              f"same assignments: {r['same_assignments']}")
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
