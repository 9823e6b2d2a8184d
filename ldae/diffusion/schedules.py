"""Noise schedules: the corruption z_t = γ_t z_0 + σ_t ε (PAPER.md 2.1).

A schedule is two tables, γ_t and σ_t for t = 0..T. Index 0 is the clean input (γ = 1, σ = 0):
training draws t uniformly from {1..T}; the probe conditions on a fixed small t (PAPER.md App. A).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ldae.choices import SCHEDULES


class NoiseSchedule(nn.Module):
    """Tables γ_t, σ_t (t = 0..T) as buffers, so they follow the module to its device."""

    def __init__(self, gamma: torch.Tensor, sigma: torch.Tensor, name: str):
        super().__init__()
        assert gamma.shape == sigma.shape and gamma.ndim == 1, (gamma.shape, sigma.shape)
        self.name = name
        self.num_steps = gamma.numel() - 1  # T
        # persistent=False: schedules are rebuilt from config, never read back from a checkpoint.
        self.register_buffer("gamma", gamma.float(), persistent=False)  # (T+1,)
        self.register_buffer("sigma", sigma.float(), persistent=False)  # (T+1,)

    def corrupt(self, z0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """z_t = γ_t z_0 + σ_t ε, with t (B,) broadcast over the other dims of z0 (B, ...)."""
        shape = (-1,) + (1,) * (z0.ndim - 1)
        return self.gamma[t].view(shape) * z0 + self.sigma[t].view(shape) * eps

    def extra_repr(self) -> str:
        return f"name={self.name}, T={self.num_steps}"


def ddpm_linear(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """DDPM/DiT: β linear in [1e-4, 0.02] (scaled by 1000/T as in DiT), γ_t² = Π_{s≤t}(1 − β_s)."""
    scale = 1000.0 / num_steps
    betas = torch.linspace(scale * beta_start, scale * beta_end, num_steps, dtype=torch.float64)
    alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])  # (T+1,)
    return NoiseSchedule(alpha_bar.sqrt(), (1 - alpha_bar).sqrt(), "ddpm_linear")


def linear_gamma2(num_steps: int = 1000) -> NoiseSchedule:
    """The paper's replacement: γ_t² = 1 − t/T, so 1 > γ_t² ≥ 0 over t = 1..T, and σ_t² = 1 − γ_t²."""
    g2 = 1 - torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    return NoiseSchedule(g2.sqrt(), (1 - g2).sqrt(), "linear_gamma2")


def sigma_linear(num_steps: int = 1000, sigma_max: float = math.sqrt(2.0)) -> NoiseSchedule:
    """No input scaling (γ ≡ 1) and σ_t linear from 0 to √2 (PAPER.md 2.1, Table 3 row 3 onward)."""
    sigma = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps * sigma_max
    return NoiseSchedule(torch.ones_like(sigma), sigma, "sigma_linear")


def single_level(num_steps: int = 1000, sigma_value: float = math.sqrt(1 / 3)) -> NoiseSchedule:
    """One noise level for every t ≥ 1 (PAPER.md 2.1: 61.5%); γ ≡ 1. √(1/3) reads the OCR'd constant."""
    sigma = torch.full((num_steps + 1,), sigma_value, dtype=torch.float64)
    sigma[0] = 0.0
    return NoiseSchedule(torch.ones_like(sigma), sigma, "single_level")


def build_schedule(name: str, num_steps: int = 1000, **kwargs) -> NoiseSchedule:
    factories = {"ddpm_linear": ddpm_linear, "linear_gamma2": linear_gamma2,
                 "sigma_linear": sigma_linear, "single_level": single_level}
    if name not in factories:
        raise ValueError(f"unknown schedule '{name}'; allowed: {', '.join(SCHEDULES)}")
    return factories[name](num_steps, **kwargs)
