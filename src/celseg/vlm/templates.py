"""Prompt templates: each class name is put in every one and the embeddings averaged."""

from __future__ import annotations

DEFAULT_TEMPLATES: list[str] = [
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a {} in the scene.",
    "there is a {} in the picture.",
    "a close-up photo of the {}.",
    "a {}.",
]
