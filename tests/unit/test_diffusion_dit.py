"""Schedules, conversions, posteriors and the learned-σ bound term of the DiT rows (PAPER.md 2.1)."""

import math

import pytest
import torch

from ldae.diffusion.objectives import Objective, learned_log_variance, vb_term
from ldae.diffusion.schedules import MIN_SCALE, build_schedule
from ldae.diffusion.schedules import schedule_from_config

MULTI = ("ddpm_linear", "cosine", "linear_gamma2", "sigma_linear")


@pytest.mark.parametrize("name", MULTI)
def test_monotone_with_the_right_ends(name):
    s = build_schedule(name, 1000)
    assert torch.all(s.sigma[1:] > s.sigma[:-1]) and torch.all(s.gamma[1:] <= s.gamma[:-1])
    assert s.gamma[0] == 1 and s.sigma[0] == 0
    if name == "sigma_linear":
        assert s.sigma[-1] == pytest.approx(math.sqrt(2)) and not s.variance_preserving
    else:
        assert s.variance_preserving and float(s.gamma[-1] ** 2) < 1e-2


def test_ddpm_alpha_bar_closed_form_and_betas():
    s = build_schedule("ddpm_linear", 1000)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    t = torch.arange(1, 1001)
    closed = torch.exp(torch.cumsum(torch.log1p(-betas), 0))  # Π_{s≤t}(1 − β_s)
    assert torch.allclose(s.alpha_bar()[1:].double(), closed, atol=1e-6)
    assert torch.allclose(s.betas()[1:].double(), betas, rtol=2e-3, atol=1e-7)
    ab, ab_prev = closed, torch.cat([torch.ones(1, dtype=torch.float64), closed[:-1]])
    post = betas * (1 - ab_prev) / (1 - ab)  # β̃_t
    assert torch.allclose(s.posterior_variance(t, t - 1).double(), post, rtol=2e-3, atol=1e-8)


def test_ddpm_posterior_mean_coefficients():
    s = build_schedule("ddpm_linear", 1000)
    t = torch.tensor([2, 300, 1000])
    ab = s.alpha_bar().double()
    beta = 1 - ab[t] / ab[t - 1]
    c_x0 = beta * ab[t - 1].sqrt() / (1 - ab[t])
    c_xt = (1 - ab[t - 1]) * (1 - beta).sqrt() / (1 - ab[t])
    z, x0 = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    ref = c_xt.float().view(-1, 1, 1, 1) * z + c_x0.float().view(-1, 1, 1, 1) * x0
    assert torch.allclose(s.posterior_mean(z, x0, t, t - 1), ref, atol=1e-4)


def test_cosine_closed_form():
    s = build_schedule("cosine", 1000)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (1, 100, 500, 900, 990):  # β below its 0.999 cap up to here
        assert float(s.alpha_bar()[t]) == pytest.approx(f(t) / f(0), rel=1e-4, abs=1e-7)
    assert float(s.betas().max()) <= 0.999 + 1e-6


def test_single_level_and_config_kwargs():
    s = schedule_from_config({"name": "single_level", "num_steps": 10, "sigma_value": 0.5})
    assert torch.allclose(s.sigma[1:], torch.full((10,), 0.5)) and s.sigma[0] == 0


@pytest.mark.parametrize("name", MULTI + ("single_level",))
def test_eps_x0_round_trip_and_clamping(name):
    s = build_schedule(name, 1000)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 3, 4, 4, generator=g), torch.randn(5, 3, 4, 4, generator=g)
    t = torch.tensor([1, 10, 500, 900, 999])
    z = s.corrupt(x0, eps, t)
    assert torch.allclose(s.x0_from_eps(z, eps, t), x0, atol=1e-3)
    assert torch.allclose(s.eps_from_x0(z, x0, t), eps, atol=1e-3)
    ends = torch.tensor([0, 1000])  # σ_0 = 0; γ_T = 0 for linear_gamma2: divisions clamped, finite
    z = s.corrupt(x0[:2], eps[:2], ends)
    e = s.eps_from_x0(z, x0[:2], ends)
    x = s.x0_from_eps(z, e, ends)
    assert torch.isfinite(e).all() and torch.isfinite(x).all()
    assert torch.allclose(s.x0_from_eps(z, eps[:2], ends)[0], x0[0], atol=1e-5)  # t = 0: x0 = z_0
    assert MIN_SCALE < float(s.sigma[1])


def test_vb_term_zero_for_the_true_posterior_and_grads_only_to_variance():
    s = build_schedule("ddpm_linear", 100)
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(4, 2, 4, 4, generator=g), torch.randn(4, 2, 4, 4, generator=g)
    t = torch.tensor([2, 30, 60, 100])
    z_t = s.corrupt(z0, eps, t)
    v = torch.full_like(z0, -1.0)  # v = −1: log β̃, the true posterior variance
    assert torch.allclose(learned_log_variance(s, v, t, t - 1)[:, 0, 0, 0], s.posterior_variance(t, t - 1).log(), atol=1e-4)
    assert vb_term(s, "eps", eps, v, z0, z_t, t).abs().max() < 1e-4
    mean = eps.clone().requires_grad_(True)
    v = torch.zeros_like(z0, requires_grad=True)
    obj = Objective("eps", "latent", "one")
    one = torch.ones(4)
    loss, terms = obj(mean + 0.1, None, z0, eps, one, one, None, var_out=v, z_t=z_t, t=t, schedule=s)
    assert {"vb", "mse"} <= set(terms) and float(terms["vb"]) > 0
    assert float(loss.detach()) == pytest.approx(float(terms["mse"] + terms["vb"]), rel=1e-5)
    # The mean gets gradient from the MSE only: compare with the loss without the bound term.
    (gm,) = torch.autograd.grad(loss, mean, retain_graph=True)
    (gm_mse,) = torch.autograd.grad(obj(mean + 0.1, None, z0, eps, one, one, None)[0], mean)
    assert torch.allclose(gm, gm_mse)
    (gv,) = torch.autograd.grad(loss, v)
    assert gv.abs().sum() > 0


def test_vb_first_step_is_decoder_nll():
    s = build_schedule("ddpm_linear", 100)
    z0 = torch.zeros(1, 1, 2, 2)
    t = torch.tensor([1])
    z_t = s.corrupt(z0, torch.zeros_like(z0), t)
    v = torch.zeros_like(z0)
    vb = vb_term(s, "x0", z0, v, z0, z_t, t)  # the model's mean is exactly z0 = 0, the centre of a bin
    std = float(torch.exp(0.5 * learned_log_variance(s, v, t, t - 1)).flatten()[0])
    mass = torch.special.ndtr(torch.tensor(1 / 255 / std)) - torch.special.ndtr(torch.tensor(-1 / 255 / std))
    assert float(vb) == pytest.approx(-math.log2(float(mass)), rel=1e-4)  # bits: −log2 of the bin's mass
