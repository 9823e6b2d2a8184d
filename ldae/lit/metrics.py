"""The one global mean of the Lightning modules: a (sum, count) pair summed over every rank.

The epoch loss of pretraining and the top-1 of the online probe, the linear probe and fine-tuning all
accumulate a local sum and count, then divide the global sums once at the epoch end: the mean over all
samples on any number of devices (never a mean of per-rank means, nor a loss divided by the world size).
"""

from __future__ import annotations

import torch


def global_mean(trainer, total: float, count: float, device: torch.device | str, scale: float = 1.0) -> float:
    """scale × Σ total / Σ count over the ranks; 0 when nothing was counted.

    The pair travels as float64, which holds a Python float sum and an integer count exactly, so on one
    device this is the plain Python quotient. `scale` multiplies before dividing (100 for a percentage).
    """
    stats = torch.tensor([total, count], dtype=torch.float64, device=device)  # (2,)
    if trainer.world_size > 1:
        stats = trainer.strategy.reduce(stats, reduce_op="sum")
    return scale * float(stats[0]) / max(1.0, float(stats[1]))
