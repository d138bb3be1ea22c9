"""Training vocabulary of the three zero-shot settings and the dataset-id -> vocabulary LUT.

| setting      | training view of labels                  | vocabulary (classifier columns) |
|--------------|------------------------------------------|---------------------------------|
| inductive    | unseen pixels -> 255                     | seen class names                |
| transductive | unseen -> 255, or pseudo labels (label_dir) | all class names              |
| oracle       | full labels                              | all class names                 |

The vocabulary is an ordered list of dataset ids; its index space is what the classifier and the
criterion see. ``lut[dataset_id]`` gives the vocabulary index, -1 for ids outside the vocabulary
and for the ignore id.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from celseg.data.classes import ClassInfo
from celseg.errors import CelsegError
from celseg.losses.targets import build_vocab_lut

SETTINGS = ("inductive", "transductive", "oracle")


@dataclass(frozen=True)
class Vocabulary:
    class_ids: tuple[int, ...]  # dataset id of each vocabulary index
    names: tuple[str, ...]
    view: str  # dataset view to read training labels with: "zero_shot" or "full"

    def lut(self, size: int = 256) -> torch.Tensor:
        """(size,) long: dataset id -> vocabulary index, -1 where the id is not in it."""
        return build_vocab_lut(list(self.class_ids), size)


def training_vocabulary(class_info: ClassInfo, setting: str, label_dir: str = "") -> Vocabulary:
    """The vocabulary and label view of a zero-shot setting (see the module table)."""
    if setting not in SETTINGS:
        raise CelsegError(f"data.setting={setting!r}; expected one of {', '.join(SETTINGS)}")
    all_ids = tuple(range(class_info.num_classes))
    if setting == "inductive":
        ids = tuple(class_info.seen_ids)
        view = "zero_shot"
    elif setting == "transductive":
        ids = all_ids
        # pseudo labels carry unseen ids on purpose: read them unfiltered
        view = "full" if label_dir else "zero_shot"
    else:
        ids = all_ids
        view = "full"
    if not ids:
        raise CelsegError(f"the {setting} vocabulary of {class_info.dataset_name!r} is empty")
    return Vocabulary(ids, tuple(class_info.names[i] for i in ids), view)


def eval_vocabulary(class_info: ClassInfo, which: str) -> tuple[int, ...]:
    """Dataset ids the evaluation predicts over: ``all`` class names or only ``seen`` ones."""
    if which == "all":
        return tuple(range(class_info.num_classes))
    if which == "seen":
        return tuple(class_info.seen_ids)
    raise CelsegError(f"eval.vocabulary={which!r}; expected 'all' or 'seen'")


def label_sources(class_info: ClassInfo, setting: str, label_dir: str = ""
                  ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(ids with ground-truth labels in training, ids trained only on pseudo labels).

    inductive: seen / none; transductive: seen / unseen when ``label_dir`` holds pseudo labels;
    oracle: every class / none. The ensemble weighs the first group with ``eval.ensemble_alpha``.
    """
    if setting not in SETTINGS:
        raise CelsegError(f"data.setting={setting!r}; expected one of {', '.join(SETTINGS)}")
    if setting == "oracle":
        return tuple(range(class_info.num_classes)), ()
    pseudo = tuple(class_info.unseen_ids) if setting == "transductive" and label_dir else ()
    return tuple(class_info.seen_ids), pseudo
