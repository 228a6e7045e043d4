"""Datasets and batching."""

from rnnkit.data.streams import batchify

__all__ = ["batchify"]
