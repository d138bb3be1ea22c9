"""Sliding-window inference against naive references."""

from __future__ import annotations

import torch

from celseg.engine.sliding import sliding_window, window_starts


def conv_predict(x: torch.Tensor) -> torch.Tensor:
    """A translation-equivariant fake model: (B,3,h,w) -> (B,4,h,w)."""
    torch.manual_seed(0)
    weight = torch.randn(4, 3, 3, 3)
    return torch.nn.functional.conv2d(x, weight, padding=1)


def test_one_window_equals_plain_inference():
    x = torch.randn(2, 3, 16, 16)
    out = sliding_window(conv_predict, x, window_size=16, window_stride=8)
    torch.testing.assert_close(out, conv_predict(x))


def test_window_starts_cover_and_stay_inside():
    for length, window, stride in [(100, 32, 21), (64, 32, 32), (33, 32, 8), (10, 32, 5)]:
        starts = window_starts(length, window, stride)
        covered = torch.zeros(max(length, window), dtype=torch.bool)
        for s in starts:
            assert 0 <= s and s + window <= max(length, window)
            covered[s:s + window] = True
        assert covered.all()
    assert window_starts(100, 32, 21) == [0, 21, 42, 63, 68]


def test_against_naive_per_pixel_average():
    x = torch.randn(1, 3, 20, 27)
    win, stride = 12, 7

    def predict(crop: torch.Tensor) -> torch.Tensor:  # position-dependent: tests the placement
        return crop[:, :2] * 2 + crop.mean()

    got = sliding_window(predict, x, win, stride)
    total = torch.zeros(1, 2, 20, 27)
    count = torch.zeros(20, 27)
    ys = sorted({*range(0, 20 - win, stride), 20 - win})
    xs = sorted({*range(0, 27 - win, stride), 27 - win})
    for y in ys:
        for x0 in xs:
            crop = x[:, :, y:y + win, x0:x0 + win]
            total[:, :, y:y + win, x0:x0 + win] += predict(crop)
            count[y:y + win, x0:x0 + win] += 1
    torch.testing.assert_close(got, total / count)


def test_small_image_is_padded_and_cropped_back():
    x = torch.randn(1, 3, 5, 6)
    seen = []

    def predict(crop: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(crop.shape[-2:]))
        return crop[:, :1, ::2, ::2]  # lower resolution output is resized to the window

    out = sliding_window(predict, x, window_size=8, window_stride=4)
    assert seen == [(8, 8)] and out.shape == (1, 1, 5, 6)
    padded = torch.nn.functional.pad(x, (0, 2, 0, 3))
    want = torch.nn.functional.interpolate(padded[:, :1, ::2, ::2], size=(8, 8), mode="bilinear",
                                           align_corners=False)[:, :, :5, :6]
    torch.testing.assert_close(out, want)
