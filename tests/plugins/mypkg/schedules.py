"""Schedules of the user's own: plain functions returning objects with gamma and sigma tables."""

from types import SimpleNamespace

import torch


def sqrt_sigma(num_steps: int, sigma_max: float = 1.0):
    """No input scaling, sigma_t = sigma_max * sqrt(t / T)."""
    t = torch.arange(num_steps + 1, dtype=torch.float64)
    return SimpleNamespace(gamma=torch.ones(num_steps + 1, dtype=torch.float64),
                           sigma=sigma_max * (t / num_steps).sqrt())


def too_short(num_steps: int):
    return SimpleNamespace(gamma=torch.ones(num_steps), sigma=torch.ones(num_steps))
