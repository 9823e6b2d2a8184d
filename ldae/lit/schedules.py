"""Learning-rate schedules, updated every optimiser step."""

from __future__ import annotations

import math

import torch


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 over `warmup_steps`, then a half-cycle cosine down to min_ratio x lr."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def per_step_schedule(optimizer: torch.optim.Optimizer, trainer, warmup_epochs: float,
                      min_ratio: float = 0.0) -> dict:
    """configure_optimizers' return value: `warmup_cosine` over the trainer's optimiser steps, updated every
    step, with the warm-up given in epochs."""
    total = max(1, int(trainer.estimated_stepping_batches))
    per_epoch = max(1, total // max(1, trainer.max_epochs))
    sched = warmup_cosine(optimizer, int(warmup_epochs * per_epoch), total, min_ratio=min_ratio)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
