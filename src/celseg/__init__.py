"""celseg: zero-shot semantic segmentation with class enhancement losses and pseudo labels."""

__version__ = "0.1.0"
