"""Samplers for the DiT rows: DDPM (ancestral) and DDIM, with classifier-free guidance through the null class.

Both walk a decreasing subsequence t_1 > t_2 > ... > 0 of the schedule's steps (respacing: DiT samples with
250 of its 1000 steps) and use only the schedule's γ, σ tables (see ldae/diffusion/schedules.py), so they
work for any schedule: the posterior q(z_s | z_t, x0) of a respaced step is exact for every pair s < t.

  DDPM: z_s = μ̃(z_t, x̂0) + σ_model ε', σ²_model = β (fixed "large", DiT's choice without learned σ),
        β̃ (fixed "small") or learned (v interpolates log β and log β̃ of the step t -> s).
  DDIM: z_s = γ_s x̂0 + √(σ_s² − c²) ε̂ + c ε',  c = η σ̃ (η = 0: deterministic).
The last step (s = 0) returns x̂0 (DDPM's final mean equals it).
"""

from __future__ import annotations

import torch
from torch import nn

from ldae.choices import GUIDANCE_CHANNELS, SAMPLERS, builder, check
from ldae.diffusion.objectives import learned_log_variance


# DiT's forward_with_cfg guides only the first 3 channels of its raw output (of SD-VAE's 4 latent channels);
# the rest, the 4th latent channel and the learned variance, stay the conditional prediction.
DIT_GUIDED_CHANNELS = 3


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + s (cond − uncond). s = 1 is the conditional prediction, 0 the null one."""
    return uncond + scale * (cond - uncond)


def guide_dit(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """DiT's rule on raw backbone outputs (B, C', ...): channels < 3 guided, the others conditional."""
    k = DIT_GUIDED_CHANNELS
    return torch.cat([guide(cond[:, :k], uncond[:, :k], scale), cond[:, k:]], dim=1)


class Denoiser(nn.Module):
    """(z_t, t, y) -> (x̂0, ε̂, v or None) in the latent, for a backbone trained with `objective` on `schedule`.

    The backbone sees what it saw in training (the latent, or it decoded to pixels) and its prediction
    (ε, x0 latent, or an image encoded back by the tokenizer) becomes both x̂0 and ε̂. With labels y and
    guidance_scale ≠ 1 the conditional and null-class predictions are computed in one batch and guided on
    the prediction channels; a learned variance is taken from the conditional half (as DiT does).
    guidance_channels="dit" applies DiT's rule instead (`guide_dit`: the first 3 raw output channels; with
    fewer than 3 prediction channels that reaches a learned variance, as DiT's code would), for FIDs
    comparable to DiT's own.
    t_offset is added to t for the backbone only: −1 for official DiT checkpoints (DDPM's k = t − 1).
    """

    def __init__(self, model, objective, schedule, tokenizer=None, guidance_scale: float = 1.0, t_offset: int = 0,
                 guidance_channels: str = "all"):
        super().__init__()
        check("gen.guidance_channels", guidance_channels, GUIDANCE_CHANNELS)
        self.model, self.objective, self.schedule, self.tokenizer = model, objective, schedule, tokenizer
        self.guidance_scale, self.t_offset = float(guidance_scale), int(t_offset)
        self.guidance_channels = guidance_channels

    def _split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return out.chunk(2, dim=1) if self.model.learn_sigma else (out, None)

    def raw(self, z_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None):
        """The (guided) prediction and variance channels of the backbone."""
        mean, var = self._raw(z_t, t, y)
        return self.objective.prediction(mean, self.tokenizer), var

    def _raw(self, z_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None):
        inp = self.objective.network_input(z_t, self.tokenizer)
        tin = t + self.t_offset
        if y is None or self.guidance_scale == 1.0:
            return self._split(self.model(inp, tin, y))  # y None: a class-conditional model gets the null class
        null = self.model.null_labels(y.shape[0], y.device)
        out = self.model(torch.cat([inp, inp]), torch.cat([tin, tin]), torch.cat([y, null]))  # (2B, C', ...)
        cond, uncond = out.chunk(2, dim=0)
        if self.guidance_channels == "dit":
            return self._split(guide_dit(cond, uncond, self.guidance_scale))
        (c_mean, c_var), (u_mean, _) = self._split(cond), self._split(uncond)
        return guide(c_mean, u_mean, self.guidance_scale), c_var

    @torch.no_grad()
    def forward(self, z_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None):
        mean, var = self.raw(z_t, t, y)
        x0, eps = self.objective.spec.latents(mean, z_t, t, self.schedule, self.tokenizer)
        return x0, eps, var


def timesteps(num_steps: int, steps: int | None = None) -> list[int]:
    """`steps` evenly spaced steps from T down to 1 (all T when None)."""
    steps = num_steps if steps is None else max(1, min(int(steps), num_steps))
    ts = torch.linspace(num_steps, 1, steps, dtype=torch.float64).round().long().unique()
    return sorted(ts.tolist(), reverse=True)


def _randn(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    # Drawn on the CPU from the seeded generator: the same samples on any device.
    return torch.randn(shape, generator=generator).to(device)


def prior_sample(schedule, shape, generator=None, device="cpu") -> torch.Tensor:
    """z_T ~ N(0, (γ_T² + σ_T²) I): N(0, I) for a variance-preserving schedule, wider without input scaling
    (the latents have unit average variance)."""
    T = schedule.num_steps
    std = float((schedule.gamma[T] ** 2 + schedule.sigma[T] ** 2).sqrt())
    return std * _randn(shape, generator, device)


def _step_pairs(ts, n: int, device):
    """(t, s, last) per sampling step: the current and the next (respaced) timestep as (n,) tensors."""
    for i, t_ in enumerate(ts):
        s_ = ts[i + 1] if i + 1 < len(ts) else 0
        yield (torch.full((n,), t_, dtype=torch.long, device=device),
               torch.full((n,), s_, dtype=torch.long, device=device), s_ == 0)


@torch.no_grad()
def ddpm_sample(denoiser: Denoiser, shape, steps: int | None = None, y: torch.Tensor | None = None,
                generator: torch.Generator | None = None, device="cpu", fixed_variance: str = "large",
                z: torch.Tensor | None = None) -> torch.Tensor:
    """Ancestral sampling -> x̂0 latents (B, C, h, w). steps: respaced steps (None: all T)."""
    if fixed_variance not in ("large", "small"):
        raise ValueError(f"unknown fixed_variance '{fixed_variance}'; allowed: large, small")
    sch = denoiser.schedule
    z = prior_sample(sch, shape, generator, device) if z is None else z
    for t, s, last in _step_pairs(timesteps(sch.num_steps, steps), shape[0], device):
        x0, _, v = denoiser(z, t, y)
        if last:
            return x0
        mean = sch.posterior_mean(z, x0, t, s)
        if v is not None:
            log_var = learned_log_variance(sch, v, t, s)
        elif fixed_variance == "large":
            log_var = sch.step_variance(t, s).clamp_min(1e-20).log().view(-1, *([1] * (z.ndim - 1)))
        else:
            log_var = sch.posterior_log_variance_clipped(t, s).view(-1, *([1] * (z.ndim - 1)))
        z = mean + torch.exp(0.5 * log_var) * _randn(z.shape, generator, device)
    return z


@torch.no_grad()
def ddim_sample(denoiser: Denoiser, shape, steps: int = 50, eta: float = 0.0, y: torch.Tensor | None = None,
                generator: torch.Generator | None = None, device="cpu", z: torch.Tensor | None = None) -> torch.Tensor:
    """DDIM -> x̂0 latents (B, C, h, w). eta = 0: deterministic given z_T."""
    sch = denoiser.schedule
    z = prior_sample(sch, shape, generator, device) if z is None else z
    for t, s, last in _step_pairs(timesteps(sch.num_steps, steps), shape[0], device):
        x0, eps, _ = denoiser(z, t, y)
        if last:
            return x0
        c = eta * sch.posterior_variance(t, s).sqrt()  # (B,)
        direction = (sch.sigma[s] ** 2 - c**2).clamp_min(0).sqrt()
        bc = lambda v: v.view(-1, *([1] * (z.ndim - 1)))  # noqa: E731
        z = bc(sch.gamma[s]) * x0 + bc(direction) * eps
        if eta > 0:
            z = z + bc(c) * _randn(z.shape, generator, device)
    return z


# The registry's entries (ldae/choices.py SAMPLERS): one signature for every sampler, so `sample` dispatches by name.
def run_ddpm(denoiser: Denoiser, shape, steps: int | None, eta: float, y: torch.Tensor | None,
             generator: torch.Generator, device) -> torch.Tensor:
    return ddpm_sample(denoiser, shape, steps, y, generator, device)  # eta is DDIM's: ancestral steps have none


def run_ddim(denoiser: Denoiser, shape, steps: int | None, eta: float, y: torch.Tensor | None,
             generator: torch.Generator, device) -> torch.Tensor:
    return ddim_sample(denoiser, shape, steps or 50, eta, y, generator, device)


def sample(denoiser: Denoiser, sampler: str, shape, steps: int | None = None, eta: float = 0.0,
           y: torch.Tensor | None = None, seed: int = 0, device="cpu") -> torch.Tensor:
    """One entry point: a sampler of the registry with a seeded generator -> x̂0 latents."""
    g = torch.Generator().manual_seed(int(seed))
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler '{sampler}'; allowed: {', '.join(SAMPLERS)}")
    return builder(SAMPLERS, sampler)(denoiser, shape, steps, eta, y, g, device)
