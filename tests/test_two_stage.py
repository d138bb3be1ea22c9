"""Two-stage (zsseg) inference with a fake VLM and fake segmenter outputs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from celseg.models.inference import geometric_ensemble
from celseg.models.two_stage import masked_crop, two_stage_probs

COLORS = torch.eye(3)  # class c is "pure colour c": red, green, blue


class FakeVLM(torch.nn.Module):
    """Image embedding = normalised mean colour of the crop; records the crops it saw."""

    def __init__(self):
        super().__init__()
        self.crops = []

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        assert images.min() >= 0 and images.max() <= 1
        self.crops.append(images.clone())
        return F.normalize(images.mean(dim=(2, 3)), dim=-1)


def test_geometric_mean_hand_computed():
    p_seg = torch.tensor([[[0.5, 0.3, 0.2]]])
    p_clip = torch.tensor([[[0.1, 0.2, 0.7]]])
    weight = torch.tensor([0.3, 0.3, 0.8])  # seen, seen, unseen
    got = geometric_ensemble(p_seg, p_clip, weight)
    want = [0.5 ** 0.7 * 0.1 ** 0.3, 0.3 ** 0.7 * 0.2 ** 0.3, 0.2 ** 0.2 * 0.7 ** 0.8]
    torch.testing.assert_close(got[0, 0], torch.tensor(want))


def test_masked_crop_fills_outside_and_pads_square():
    image = torch.zeros(3, 6, 8)
    image[0] = 1.0  # red everywhere
    mask = torch.zeros(6, 8, dtype=torch.bool)
    mask[1:3, 2:6] = True  # 2 x 4 box
    mask[2, 5] = False
    crop = masked_crop(image, mask, crop_size=4, fill=(0.0, 0.0, 1.0))
    assert crop.shape == (3, 4, 4)
    # reference at the native scale: 4x4 square, rows 0 and 3 are padding, row 2 col 3 is outside
    ref = torch.zeros(3, 4, 4)
    ref[2] = 1.0
    ref[:, 1:3, :] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    ref[:, 2, 3] = torch.tensor([0.0, 0.0, 1.0])
    torch.testing.assert_close(crop, ref)


def test_two_stage_end_to_end():
    # image: left half red, right half green (8 x 8)
    images = torch.zeros(1, 3, 8, 8)
    images[0, 0, :, :4] = 1.0
    images[0, 1, :, 4:] = 1.0
    masks = torch.full((1, 3, 8, 8), -10.0)
    masks[0, 0, :, :4] = 10.0  # q0: left half
    masks[0, 1, :, 4:] = 10.0  # q1: right half
    # q2: empty proposal (invalid): its CLIP term is neutral
    logits = torch.tensor([[[2.0, 1.0, 0.0, 0.5], [0.0, 0.0, 3.0, 0.5], [1.0, 1.0, 1.0, 0.0]]])
    vlm = FakeVLM()
    out = two_stage_probs({"pred_logits": logits, "pred_masks": masks}, images, vlm,
                          COLORS, unseen_ids=[1], has_background=True,
                          clip_weight_seen=0.25, clip_weight_unseen=0.75, crop_size=4)
    assert out.shape == (1, 3, 8, 8)
    assert len(vlm.crops) == 1 and vlm.crops[0].shape == (2, 3, 4, 4)  # invalid one skipped

    # independent reference, by hand
    p_seg = logits.softmax(-1)[0, :, :3]
    e = math.exp(-100.0)
    p_clip = torch.tensor([[1 / (1 + 2 * e), e / (1 + 2 * e), e / (1 + 2 * e)],
                           [e / (1 + 2 * e), 1 / (1 + 2 * e), e / (1 + 2 * e)],
                           [1.0, 1.0, 1.0]])
    w = torch.tensor([0.25, 0.75, 0.25])
    p = p_seg ** (1 - w) * p_clip ** w
    sig = torch.sigmoid(masks[0])
    want = torch.zeros(3, 8, 8)
    for q in range(3):
        for c in range(3):
            want[c] += p[q, c] * sig[q]
    torch.testing.assert_close(out[0], want)
    # the segmenter said "blue" for the green half; CLIP moves it to green (unseen class 1)
    assert out[0, :, 0, 6].argmax() == 1
