import math

import pytest
import torch

from ldae.diffusion.schedules import SCHEDULES, build_schedule


@pytest.mark.parametrize("name", SCHEDULES)
def test_tables_start_clean(name):
    s = build_schedule(name, 1000)
    assert s.gamma.shape == s.sigma.shape == (1001,)
    assert s.gamma[0] == pytest.approx(1.0) and s.sigma[0] == pytest.approx(0.0)


def test_ddpm_linear_matches_dit_alpha_bar():
    s = build_schedule("ddpm_linear", 1000)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    assert torch.allclose(s.gamma[1:].double() ** 2, ab, atol=1e-6)
    assert (s.gamma[1:] ** 2 + s.sigma[1:] ** 2).sub(1).abs().max() < 1e-5
    assert torch.all(s.gamma[1:] < s.gamma[:-1]) and torch.all(s.sigma[1:] > s.sigma[:-1])
    assert s.gamma[250] ** 2 == pytest.approx(0.524, abs=0.01)  # PAPER.md 2.1's check values


def test_linear_gamma2_ends():
    s = build_schedule("linear_gamma2", 1000)
    g2 = s.gamma**2
    assert g2[1] == pytest.approx(1 - 1e-3, abs=1e-6) and g2[-1] == pytest.approx(0.0, abs=1e-5)
    assert torch.all(g2[1:] < g2[:-1])
    assert float(s.betas().max()) == pytest.approx(0.999, abs=1e-5)  # the last step, clamped as in iDDPM


@pytest.mark.parametrize("name", ["linear_gamma2", "cosine", "ddpm_linear"])
def test_vb_term_bounded_at_the_last_step(name):
    """A fair ε prediction costs a few bits at t = T too (γ_T = 0 once gave ~10^4 bits: loss spikes)."""
    from ldae.diffusion.objectives import vb_term

    s = build_schedule(name, 1000)
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(64, 4, 4, 4, generator=g), torch.randn(64, 4, 4, 4, generator=g)
    t = torch.full((64,), 1000)
    pred = eps + 0.3 * torch.randn(eps.shape, generator=g)
    vb = vb_term(s, "eps", pred, torch.zeros_like(z0), z0, s.corrupt(z0, eps, t), t)
    assert float(vb.max()) < 200


def test_sigma_linear_no_input_scaling():
    s = build_schedule("sigma_linear", 1000)
    assert torch.all(s.gamma == 1)
    assert s.sigma[-1] == pytest.approx(math.sqrt(2), rel=1e-6)
    assert s.sigma[500] == pytest.approx(math.sqrt(2) / 2, rel=1e-5)
    assert torch.all(s.sigma[1:] > s.sigma[:-1])


def test_single_level_constant():
    s = build_schedule("single_level", 1000)
    assert torch.allclose(s.sigma[1:], torch.full((1000,), math.sqrt(1 / 3)))


def test_corrupt_formula():
    s = build_schedule("ddpm_linear", 1000)
    z0, eps = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    t = torch.tensor([1, 10, 500, 1000])
    zt = s.corrupt(z0, eps, t)
    for i in range(4):
        assert torch.allclose(zt[i], s.gamma[t[i]] * z0[i] + s.sigma[t[i]] * eps[i])


def test_unknown_schedule_message():
    with pytest.raises(ValueError, match="unknown schedule 'nope'; allowed: ddpm_linear"):
        build_schedule("nope")


def test_the_registry_is_the_dispatch(monkeypatch):
    """A schedule is its function and one registry entry: the config check and build_schedule read the same table,
    and every built-in has its conf/schedule option."""
    from helpers import ROOT

    from ldae import choices

    conf = ROOT / "conf" / "schedule"
    assert set(SCHEDULES) <= {p.stem for p in conf.glob("*.yaml")}
    monkeypatch.setitem(choices.SCHEDULES, "flat_half", f"{__name__}:_flat_half")
    s = build_schedule("flat_half", 4)
    assert torch.equal(s.gamma, torch.tensor([1.0, 0.5, 0.5, 0.5, 0.5])) and s.name == "flat_half"
    with pytest.raises(ValueError, match="unknown schedule 'nope'; allowed: ddpm_linear, cosine, .*, flat_half"):
        build_schedule("nope", 4)


def _flat_half(num_steps: int):
    from ldae.diffusion.schedules import NoiseSchedule

    gamma = torch.full((num_steps + 1,), 0.5)
    gamma[0] = 1.0
    return NoiseSchedule(gamma, (1 - gamma**2).sqrt(), "flat_half")
