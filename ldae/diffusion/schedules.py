"""Noise schedules: the corruption z_t = γ_t z_0 + σ_t ε (PAPER.md 2.1).

A schedule is two tables, γ_t and σ_t for t = 0..T. Index 0 is the clean input (γ = 1, σ = 0):
training draws t uniformly from {1..T}; the probe conditions on a fixed small t (PAPER.md App. A).
DDPM's step index k = 0..T-1 is our t = k + 1 (official DiT checkpoints are conditioned on k).

Everything the samplers and the learned-σ bound need follows from the two tables for any schedule
(variance preserving or not), with the transition z_t | z_s for s < t (Kingma et al.'s VDM notation):
  α_{t|s} = γ_t / γ_s,   σ²_{t|s} = σ_t² − α_{t|s}² σ_s²   (for DDPM, s = t−1: σ²_{t|t−1} = β_t),
and the posterior q(z_s | z_t, z_0) = N(μ̃, σ̃²) with
  μ̃ = α_{t|s} σ_s² / σ_t² · z_t + γ_s σ²_{t|s} / σ_t² · z_0,   σ̃² = σ²_{t|s} σ_s² / σ_t²   (β̃_t for s = t−1).
Conversions between ε and x0 divide by γ or σ, clamped at MIN_SCALE where they reach 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ldae.choices import SCHEDULES, builder
from ldae.errors import ConfigError

MIN_SCALE = 1e-4  # below every non-zero γ_t, σ_t of the schedules here (smallest: σ_1 of sigma_linear, 1.4e-3)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) to broadcast against `like` (B, ...)."""
    return v.view((-1,) + (1,) * (like.ndim - 1))


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

    # --- conversions (clamped where γ or σ reaches 0) ---------------------------------------------
    def x0_from_eps(self, z_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0 = (z_t − σ_t ε) / γ_t."""
        return (z_t - _bcast(self.sigma[t], z_t) * eps) / _bcast(self.gamma[t].clamp_min(MIN_SCALE), z_t)

    def eps_from_x0(self, z_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε = (z_t − γ_t x0) / σ_t."""
        return (z_t - _bcast(self.gamma[t], z_t) * x0) / _bcast(self.sigma[t].clamp_min(MIN_SCALE), z_t)

    # --- transitions and posteriors (s < t, both (B,) index tensors) --------------------------------
    def step_variance(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """σ²_{t|s} = σ_t² − (γ_t/γ_s)² σ_s²: the variance of z_t | z_s (β_t for s = t − 1). (B,)"""
        a = self.gamma[t].double() / self.gamma[s].double().clamp_min(MIN_SCALE)
        return (self.sigma[t].double() ** 2 - a**2 * self.sigma[s].double() ** 2).clamp_min(0).float()

    def posterior_variance(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """σ̃² = σ²_{t|s} σ_s² / σ_t² (β̃_t for s = t − 1; 0 when s = 0). (B,)"""
        return self.step_variance(t, s) * self.sigma[s] ** 2 / self.sigma[t].clamp_min(MIN_SCALE) ** 2

    def posterior_mean(self, z_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """μ̃(z_t, x0) of q(z_s | z_t, z_0 = x0)."""
        var_t = self.sigma[t].clamp_min(MIN_SCALE) ** 2
        a = self.gamma[t] / self.gamma[s].clamp_min(MIN_SCALE)
        c_zt = a * self.sigma[s] ** 2 / var_t
        c_x0 = self.gamma[s] * self.step_variance(t, s) / var_t
        return _bcast(c_zt, z_t) * z_t + _bcast(c_x0, z_t) * x0

    def posterior_log_variance_clipped(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """log σ̃², with the zero variance of the last step (s = 0) replaced by the next step's (as DDPM does)."""
        var = self.posterior_variance(t, s)
        nxt = self.posterior_variance((t + 1).clamp_max(self.num_steps), t)  # the following step's σ̃²
        return torch.where(s == 0, nxt, var).clamp_min(1e-20).log()

    @property
    def variance_preserving(self) -> bool:
        return bool(((self.gamma**2 + self.sigma**2) - 1).abs().max() < 1e-4)

    def alpha_bar(self) -> torch.Tensor:
        """γ_t² (ᾱ_t of DDPM for a variance-preserving schedule), (T+1,)."""
        return self.gamma**2

    def betas(self) -> torch.Tensor:
        """β_t = σ²_{t|t−1} for t = 1..T, as (T+1,) with β_0 = 0."""
        t = torch.arange(1, self.num_steps + 1, device=self.gamma.device)
        return torch.cat([torch.zeros(1, device=self.gamma.device), self.step_variance(t, t - 1)])

    def extra_repr(self) -> str:
        return f"name={self.name}, T={self.num_steps}"


def ddpm_linear(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """DDPM/DiT: β linear in [1e-4, 0.02] (scaled by 1000/T as in DiT), γ_t² = Π_{s≤t}(1 − β_s)."""
    scale = 1000.0 / num_steps
    betas = torch.linspace(scale * beta_start, scale * beta_end, num_steps, dtype=torch.float64)
    alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])  # (T+1,)
    return NoiseSchedule(alpha_bar.sqrt(), (1 - alpha_bar).sqrt(), "ddpm_linear")


def cosine(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """Nichol & Dhariwal: ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2), β_t = 1 − ᾱ_t/ᾱ_{t−1} ≤ 0.999."""
    f = torch.cos((torch.arange(num_steps + 1, dtype=torch.float64) / num_steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)  # (T,)
    alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])
    return NoiseSchedule(alpha_bar.sqrt(), (1 - alpha_bar).clamp_min(0).sqrt(), "cosine")


def linear_gamma2(num_steps: int = 1000, max_beta: float = 0.999) -> NoiseSchedule:
    """The paper's replacement: γ_t² = 1 − t/T, so 1 > γ_t² ≥ 0 over t = 1..T, and σ_t² = 1 − γ_t².

    [NF] discretisation. The last step's β_T = 1 − γ_T²/γ_{T−1}² would be exactly 1 (γ_T = 0), where the
    learned-σ bound term divides by γ_T and reached ~10^4 bits for one sample; β is clamped at 0.999 as
    improved DDPM does for the cosine schedule, so γ_T² = 10^-6 (every other step is unchanged).
    """
    g2 = 1 - torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    g2[-1] = (1 - max_beta) * g2[-2]
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
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule '{name}'; allowed: {', '.join(SCHEDULES)}")
    return builder(SCHEDULES, name)(num_steps, **kwargs)  # the registry's function (ldae/choices.py)


def schedule_from_config(node) -> NoiseSchedule:
    """The `schedule` config node -> NoiseSchedule; keys beyond name/num_steps go to the factory (sigma, ...).
    A node with `_target_` is a user's schedule (ldae.plugins): a NoiseSchedule, or any object with gamma and
    sigma tables, checked like the built-in ones."""
    from ldae import plugins

    if plugins.is_plugin(node):
        return plugin_schedule(node)
    extra = {k: v for k, v in dict(node).items() if k not in ("name", "num_steps")}
    return build_schedule(node["name"], int(node["num_steps"]), **extra)


def plugin_schedule(node) -> NoiseSchedule:
    from ldae import plugins

    T = int(node["num_steps"])
    obj = plugins.instantiate(node, "schedule", {"num_steps": T})
    gamma, sigma = (torch.as_tensor(obj.gamma, dtype=torch.float64), torch.as_tensor(obj.sigma, dtype=torch.float64))
    target = node.get("_target_")
    if gamma.shape != (T + 1,) or sigma.shape != (T + 1,):
        raise ConfigError(f"schedule._target_={target} gives gamma {tuple(gamma.shape)} and sigma {tuple(sigma.shape)}; "
                          f"allowed: both ({T + 1},), t = 0..schedule.num_steps={T}")
    if not (torch.isfinite(gamma).all() and torch.isfinite(sigma).all() and (gamma >= 0).all() and (sigma >= 0).all()):
        raise ConfigError(f"schedule._target_={target} has negative or non-finite gamma/sigma; allowed: finite values >= 0")
    if float(sigma[0]) != 0.0 or not bool((sigma[1:] > 0).all()):
        raise ConfigError(f"schedule._target_={target}: sigma_0 must be 0 (t = 0 is the clean input) and sigma_t > 0 "
                          f"for t >= 1")
    return NoiseSchedule(gamma, sigma, str(node.get("name")))
