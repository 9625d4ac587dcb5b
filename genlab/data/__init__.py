"""Datasets: each yields {"image": float (3, H, W) in [-1, 1], "label": long} and has class_names; a token cache
yields {"tokens": ..., "label": long} instead (a dataset encoded once by a tokenizer)."""

from genlab.data import cache, digits, imagefolder, joint, moving_openmoji, openmoji, shards, videofolder  # noqa: F401
from genlab.data.base import DataError, TensorImageDataset, to_float, to_uint8

__all__ = ["DataError", "TensorImageDataset", "to_float", "to_uint8"]
