"""The two kinds of pretraining batch, told apart by type rather than by length.

NamedTuples: datasets return one per item, torch's default collation keeps the type (each field is
stacked), Lightning moves them to the device field by field, and `x, y, index = batch` still unpacks.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class ImageBatch(NamedTuple):
    """Images in [-1, 1] (3, H, W) or (B, 3, H, W), their labels and dataset indices."""

    x: torch.Tensor
    y: torch.Tensor | int
    index: torch.Tensor | int


class LatentBatch(NamedTuple):
    """A latent-cache item: the raw posterior of both flips, (2, C, h, w) or (B, 2, C, h, w), and no image."""

    mean: torch.Tensor
    logvar: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor | int
