import pytest
import torch

from ldae.diffusion.objectives import Objective, loss_weight
from ldae.tokenizers import PatchPCA


def _pca(d=4):
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(64, 3, 4, 4, generator=g) * 2 - 1, size=16, mode="bilinear")
    pca = PatchPCA(4, d)
    pca.fit([x])
    return pca, x


def test_loss_weights():
    g, s = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.0])
    assert torch.allclose(loss_weight("inv_one_plus_sigma2", g, s), torch.tensor([1.0, 0.5]))
    assert torch.allclose(loss_weight("gamma2", g, s), torch.tensor([1.0, 0.25]))
    assert torch.allclose(loss_weight("one", g, s), torch.ones(2))
    assert torch.isfinite(loss_weight("snr", g, s)).all()
    with pytest.raises(ValueError, match="allowed"):
        loss_weight("nope", g, s)


def test_component_loss_equals_pixel_mse_with_unit_weights():
    pca, x = _pca()
    pred = torch.randn_like(x)
    obj = Objective("image", "image", "one", residual_weight=1.0)
    one = torch.ones(x.shape[0])
    loss, terms = obj(pred, x, None, None, one, one * 0, pca)
    assert float(loss) == pytest.approx(float((x - pred).pow(2).mean()), rel=1e-4)


def test_residual_components_are_down_weighted():
    pca, x = _pca(d=4)
    V = pca.basis()
    one = torch.ones(x.shape[0])
    obj = Objective("image", "image", "one", residual_weight=0.1)
    # An error only along a residual component costs 0.1 of the same error along a principal one.
    def err_along(i):
        tokens = torch.zeros(x.shape[0], 16, 48)
        tokens[..., :] = V[:, i]
        return pca.unpatchify(tokens, (4, 4))
    l_principal = obj(x - err_along(0), x, None, None, one, one, pca)[0]
    l_residual = obj(x - err_along(10), x, None, None, one, one, pca)[0]
    assert float(l_residual) == pytest.approx(0.1 * float(l_principal), rel=1e-4)


def test_lambda_scales_per_sample():
    pca, x = _pca()
    pred = torch.zeros_like(x)
    obj = Objective("image", "image", "inv_one_plus_sigma2")
    g = torch.ones(x.shape[0])
    l0 = obj(pred, x, None, None, g, g * 0, pca)[0]
    l1 = obj(pred, x, None, None, g, g, pca)[0]  # σ = 1 -> λ = 1/2
    assert float(l1) == pytest.approx(0.5 * float(l0), rel=1e-5)


def test_latent_targets_and_inputs():
    pca, x = _pca()
    z0 = pca.encode(x)
    eps = torch.randn_like(z0)
    assert torch.equal(Objective("eps", "latent", "one").target(x, z0, eps, pca), eps)
    assert torch.equal(Objective("x0", "latent", "one").target(x, z0, eps, pca), z0)
    assert torch.allclose(Objective("image_pca", "image", "one").target(x, z0, eps, pca), pca.decode(z0))
    assert Objective("eps", "latent").network_input(z0, pca).shape == z0.shape
    assert Objective("image", "image").network_input(z0, pca).shape == x.shape
    with pytest.raises(ValueError, match="target.predict 'nope'"):
        Objective("nope")


def test_output_basis_tokenizer_is_an_orthonormal_reparameterisation_of_the_image_output():
    """output_basis=tokenizer reads the output as PCA coefficients per patch: pixels = V c. The same image
    is reached by the coefficients V^T x, the loss value is the same, and a zero output stays zero."""
    import torch

    from ldae.diffusion.objectives import Objective
    from ldae.tokenizers import PatchPCA

    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8) * 2 - 1
    pca = PatchPCA(patch_size=4, latent_dim=5, num_patches=10**6)
    pca.fit([x])
    pix, rot = Objective(output_basis="pixels"), Objective(output_basis="tokenizer")
    target = torch.rand(4, 3, 8, 8) * 2 - 1
    coeffs = pca.unpatchify(pca.patchify(target) @ pca.basis(), (2, 2))  # V^T x per patch, as a map
    assert torch.allclose(rot.prediction(coeffs, pca), target, atol=1e-5)
    assert torch.equal(pix.prediction(coeffs, pca), coeffs)
    assert torch.equal(rot.prediction(torch.zeros_like(target), pca), torch.zeros_like(target))
    z0 = pca.encode(x[:4])
    g, s = torch.ones(4), torch.full((4,), 0.5)
    l_pix, _ = pix(target, x[:4], z0, torch.zeros_like(z0), g, s, pca)
    l_rot, _ = rot(rot.prediction(coeffs, pca), x[:4], z0, torch.zeros_like(z0), g, s, pca)
    assert torch.allclose(l_pix, l_rot, atol=1e-6)
    import pytest

    with pytest.raises(ValueError, match="unknown target.output_basis 'pca'; allowed: pixels, tokenizer"):
        Objective(output_basis="pca")
