"""Datasets: each yields {"image": float (3, H, W) in [-1, 1], "label": long} and has class_names."""

from genlab.data import digits, imagefolder, openmoji  # noqa: F401  (registers "digits", "imagefolder", "openmoji")
from genlab.data.base import DataError, TensorImageDataset, to_float, to_uint8

__all__ = ["DataError", "TensorImageDataset", "to_float", "to_uint8"]
