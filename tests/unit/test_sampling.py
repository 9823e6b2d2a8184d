"""DDPM/DDIM samplers, classifier-free guidance, sample grids and the FID gate, on a tiny latent DiT."""

import pytest
import torch
from helpers import png_pixels

from ldae.diffusion.objectives import Objective
from ldae.diffusion.sampling import Denoiser, ddim_sample, ddpm_sample, guide, sample, timesteps
from ldae.diffusion.schedules import build_schedule
from ldae.models.dit import DiT

SHAPE = (3, 2, 4, 4)


def _model(learn_sigma=False, num_classes=5):
    torch.manual_seed(0)
    m = DiT(input_size=4, patch_size=1, in_channels=2, hidden_size=32, depth=2, num_heads=2,
            num_classes=num_classes, class_dropout=0.1, learn_sigma=learn_sigma, adaln_zero=False)
    return m.eval()


def _den(model, scale=1.0, schedule="ddpm_linear", predict="eps"):
    return Denoiser(model, Objective(predict, "latent", "one"), build_schedule(schedule, 50), None, scale)


def test_timesteps_respacing():
    assert timesteps(1000, 4) == [1000, 667, 334, 1]
    assert timesteps(10) == list(range(10, 0, -1))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("learn_sigma", [False, True])
def test_shapes_and_seed_determinism(sampler, learn_sigma):
    den = _den(_model(learn_sigma))
    y = torch.tensor([0, 3, 4])
    a = sample(den, sampler, SHAPE, steps=5, eta=0.5, y=y, seed=7)
    b = sample(den, sampler, SHAPE, steps=5, eta=0.5, y=y, seed=7)
    c = sample(den, sampler, SHAPE, steps=5, eta=0.5, y=y, seed=8)
    assert a.shape == SHAPE and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_sample_dispatches_through_the_registry():
    """gen.sampler's names are the registry's (what validate allows), and `sample` runs the entry's sampler."""
    from ldae.choices import SAMPLERS

    den = _den(_model())
    assert list(SAMPLERS) == ["ddpm", "ddim"]
    got = sample(den, "ddim", SHAPE, steps=None, eta=0.5, seed=3)
    want = ddim_sample(den, SHAPE, 50, 0.5, None, torch.Generator().manual_seed(3))  # DiT's 50 steps by default
    assert torch.equal(got, want)
    got = sample(den, "ddpm", SHAPE, steps=4, eta=0.5, seed=3)
    assert torch.equal(got, ddpm_sample(den, SHAPE, 4, None, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="unknown sampler 'euler'; allowed: ddpm, ddim"):
        sample(den, "euler", SHAPE)


def test_ddim_eta0_is_deterministic_given_the_start():
    den = _den(_model())
    z = torch.randn(SHAPE)
    a = ddim_sample(den, SHAPE, steps=6, eta=0.0, generator=torch.Generator().manual_seed(1), z=z.clone())
    b = ddim_sample(den, SHAPE, steps=6, eta=0.0, generator=torch.Generator().manual_seed(2), z=z.clone())
    assert torch.equal(a, b)
    c = ddim_sample(den, SHAPE, steps=6, eta=1.0, generator=torch.Generator().manual_seed(1), z=z.clone())
    d = ddim_sample(den, SHAPE, steps=6, eta=1.0, generator=torch.Generator().manual_seed(2), z=z.clone())
    assert not torch.allclose(c, d)


def test_ddpm_fixed_variances_differ_and_sigma_linear_runs():
    den = _den(_model())
    z = torch.randn(SHAPE)
    a = ddpm_sample(den, SHAPE, 5, generator=torch.Generator().manual_seed(0), fixed_variance="large", z=z)
    b = ddpm_sample(den, SHAPE, 5, generator=torch.Generator().manual_seed(0), fixed_variance="small", z=z)
    assert not torch.allclose(a, b)
    for predict in ("eps", "x0"):  # no input scaling: prior N(0, (1 + 2) I), posterior of a VE schedule
        out = sample(_den(_model(), schedule="sigma_linear", predict=predict), "ddpm", SHAPE, steps=5)
        assert torch.isfinite(out).all()


def test_guidance_scale_one_is_the_conditional_prediction():
    m = _model(learn_sigma=True)
    z, t, y = torch.randn(SHAPE), torch.tensor([5, 20, 50]), torch.tensor([1, 2, 3])
    cond = m(z, t, y)
    null = m(z, t, m.null_labels(3))
    mean1, var1 = _den(m, 1.0).raw(z, t, y)
    assert torch.allclose(torch.cat([mean1, var1], 1), cond, atol=1e-6)
    mean0, var0 = _den(m, 0.0).raw(z, t, y)  # through the batched cond/null path
    assert torch.allclose(mean0, null[:, :2], atol=1e-5) and torch.allclose(var0, cond[:, 2:], atol=1e-5)
    mean4, _ = _den(m, 4.0).raw(z, t, y)
    assert torch.allclose(mean4, guide(cond[:, :2], null[:, :2], 4.0), atol=1e-5)
    assert torch.allclose(guide(cond, null, 1.0), cond, atol=1e-6)
    # Without labels a class-conditional model is unconditional: the null class.
    assert torch.allclose(_den(m, 4.0).raw(z, t, None)[0], null[:, :2], atol=1e-6)


def test_official_checkpoint_time_offset():
    m = _model()
    den = Denoiser(m, Objective("eps", "latent", "one"), build_schedule("ddpm_linear", 50), None, 1.0, t_offset=-1)
    z, t = torch.randn(SHAPE), torch.tensor([1, 2, 50])
    assert torch.allclose(den.raw(z, t)[0], m(z, t - 1), atol=1e-6)


def test_save_grid(tmp_path):
    from ldae.generation import save_grid

    grid = save_grid(torch.rand(6, 3, 8, 8) * 2 - 1, tmp_path / "g.png", nrow=3)
    size, px = png_pixels(tmp_path / "g.png")
    assert size == (3 * (8 + 2) + 2, 2 * (8 + 2) + 2) and px.std() > 0  # 3 x 2 tiles of 8 px, 2 px padding
    assert grid.shape[0] == 3 and 0 <= float(grid.min()) and float(grid.max()) <= 1


def test_fid_without_weights_says_so():
    from omegaconf import OmegaConf

    from ldae.generation import NO_FID_WEIGHTS, fid

    cfg = OmegaConf.create({"fid": {"inception_path": None, "num_samples": 8, "feature": 64}})
    assert fid(None, cfg, None) == NO_FID_WEIGHTS == "no FID weights"
    cfg.fid.inception_path = "/nonexistent/inception.pth"
    with pytest.raises(FileNotFoundError, match="gen.fid.inception_path"):
        fid(None, cfg, None)


def test_fid_reads_local_inception_weights(tmp_path, monkeypatch):
    """With a local weights file (here a random InceptionV3 in torch-fidelity's format) FID is a number."""
    from omegaconf import OmegaConf
    from torch.utils.data import TensorDataset
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    import ldae.generation as gen

    def no_download(*a, **k):
        raise AssertionError("FID must never download")

    monkeypatch.setattr(fe, "load_state_dict_from_url", no_download)
    with monkeypatch.context() as m:  # build a random network once, to write a weights file
        m.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        m.setattr(fe.torch, "load", lambda *a, **k: {})
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["64"], feature_extractor_weights_path="x")
    path = tmp_path / "inception.pth"
    torch.save(net.state_dict(), path)

    class FakeModule:
        def encoder(self, use_ema=True):
            return torch.nn.Linear(1, 1)

    monkeypatch.setattr(gen, "generate_images", lambda module, g, n, seed=0: torch.rand(n, 3, 16, 16) * 2 - 1)
    cfg = OmegaConf.create({"batch_size": 8, "fid": {"inception_path": str(path), "num_samples": 8, "feature": 64}})
    real = TensorDataset(torch.rand(10, 3, 16, 16) * 2 - 1, torch.zeros(10), torch.arange(10))
    score = gen.fid(FakeModule(), cfg, real)
    assert isinstance(score, float) and score == score


def test_dit_guidance_channels_match_a_hand_computation():
    """gen.guidance_channels=dit: DiT's forward_with_cfg rule, computed by hand on a 4-channel latent model
    with learned σ (8 raw channels): channels 0-2 guided, channel 3 and σ the conditional prediction."""
    torch.manual_seed(0)
    m = DiT(input_size=4, patch_size=1, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=5,
            class_dropout=0.1, learn_sigma=True, adaln_zero=False).eval()
    z, t, y, s = torch.randn(3, 4, 4, 4), torch.tensor([5, 20, 50]), torch.tensor([1, 2, 3]), 4.0
    c, u = m(z, t, y), m(z, t, m.null_labels(3))  # (3, 8, 4, 4) each
    want = c.clone()
    for ch in range(3):
        want[:, ch] = u[:, ch] + s * (c[:, ch] - u[:, ch])
    sch = build_schedule("ddpm_linear", 50)
    dit = Denoiser(m, Objective("eps", "latent", "one"), sch, None, s, guidance_channels="dit")
    mean, var = dit.raw(z, t, y)
    assert torch.allclose(torch.cat([mean, var], 1), want, atol=1e-5)
    # The default guides all 4 prediction channels: channel 3 is where the two rules part.
    mean_all, var_all = Denoiser(m, Objective("eps", "latent", "one"), sch, None, s).raw(z, t, y)
    assert torch.allclose(mean_all[:, :3], mean[:, :3], atol=1e-5) and torch.allclose(var_all, var, atol=1e-6)
    assert not torch.allclose(mean_all[:, 3], mean[:, 3], atol=1e-3)
    # Scale 1 needs no null pass and is the conditional prediction in both modes.
    one = Denoiser(m, Objective("eps", "latent", "one"), sch, None, 1.0, guidance_channels="dit").raw(z, t, y)
    assert torch.allclose(torch.cat(one, 1), c, atol=1e-6)
    with pytest.raises(ValueError, match="unknown gen.guidance_channels 'x'; allowed: all, dit"):
        Denoiser(m, Objective("eps", "latent", "one"), sch, None, s, guidance_channels="x")


def test_guidance_channels_and_fid_reference_are_validated(compose):
    from ldae.config import ConfigError, validate

    validate(compose("experiment=trajectory/00_dit_baseline", "gen.enabled=true", "gen.guidance_channels=dit"))
    with pytest.raises(ConfigError, match="unknown gen.guidance_channels 'some'; allowed: all, dit"):
        validate(compose("experiment=trajectory/00_dit_baseline", "gen.enabled=true", "gen.guidance_channels=some"))
    with pytest.raises(ConfigError, match="gen.fid.reference=/r.npz needs gen.fid.inception_path"):
        validate(compose("experiment=trajectory/00_dit_baseline", "gen.enabled=true", "gen.fid.reference=/r.npz"))
    with pytest.raises(ConfigError, match="gen.fid.reference=/r.npz does not exist"):
        validate(compose("experiment=trajectory/00_dit_baseline", "gen.enabled=true", "gen.fid.reference=/r.npz",
                         "gen.fid.inception_path=/i.pth"))


def _random_inception(tmp_path, monkeypatch, feature="64"):
    """A randomly initialised torch-fidelity InceptionV3 written as a weights file (never downloaded)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    with monkeypatch.context() as m:
        m.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        m.setattr(fe.torch, "load", lambda *a, **k: {})
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", [feature], feature_extractor_weights_path="x")
    path = tmp_path / "inception.pth"
    torch.save(net.state_dict(), path)
    return path


def test_fid_against_npz_reference_statistics_equals_torchmetrics_fid(tmp_path, monkeypatch):
    """gen.fid.reference: mu and sigma in an .npz (ADM's evaluator layout), computed here with numpy from the
    same random Inception's features of the real images, give torchmetrics' own FID on those images."""
    import numpy as np
    from omegaconf import OmegaConf
    from torch.utils.data import TensorDataset
    from torchmetrics.image.fid import FrechetInceptionDistance

    import ldae.generation as gen

    path = _random_inception(tmp_path, monkeypatch)
    g = torch.Generator().manual_seed(1)
    real_imgs = torch.rand(24, 3, 16, 16, generator=g) * 2 - 1
    fake_imgs = (torch.rand(16, 3, 16, 16, generator=g) * 1.6 - 0.8)  # another distribution: FID well above 0

    ref = FrechetInceptionDistance(feature=64, normalize=True, feature_extractor_weights_path=str(path))
    ref.update((real_imgs + 1) / 2, real=True)
    ref.update((fake_imgs + 1) / 2, real=False)
    want = float(ref.compute())
    # The same features torchmetrics extracts (uint8 images), their statistics by numpy, as ADM writes them.
    feats = ref.inception((((real_imgs + 1) / 2) * 255).byte()).double().numpy()
    np.savez(tmp_path / "ref.npz", mu=feats.mean(0), sigma=np.cov(feats, rowvar=False), arr_0=np.zeros(1))

    class FakeModule:
        def encoder(self, use_ema=True):
            return torch.nn.Linear(1, 1)

    calls = iter(fake_imgs.split(8))
    monkeypatch.setattr(gen, "generate_images", lambda module, gcfg, n, seed=0: next(calls))
    cfg = OmegaConf.create({"batch_size": 8, "fid": {"inception_path": str(path), "num_samples": 16, "feature": 64,
                                                     "reference": str(tmp_path / "ref.npz")}})
    no_real = TensorDataset(torch.zeros(0, 3, 16, 16), torch.zeros(0), torch.zeros(0))  # never read
    got = gen.fid(FakeModule(), cfg, no_real)
    assert want > 1e-4 and got == pytest.approx(want, rel=1e-4)

    np.savez(tmp_path / "bad.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(ValueError, match="holds statistics of \\(2048,\\) features, gen.fid.feature=64"):
        gen.load_reference_stats(tmp_path / "bad.npz", 64)
    np.savez(tmp_path / "images.npz", arr_0=np.zeros(1))
    with pytest.raises(ValueError, match="has no mu and sigma array"):
        gen.load_reference_stats(tmp_path / "images.npz", 64)
    with pytest.raises(FileNotFoundError, match="gen.fid.reference=/nope.npz does not exist"):
        gen.load_reference_stats("/nope.npz", 64)
