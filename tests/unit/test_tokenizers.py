import pytest
import torch
from helpers import smooth_images
from omegaconf import OmegaConf

from ldae.plan import effective_latent_dim
from ldae.tokenizers import PatchPCA, Pixels, build_tokenizer, fit_or_load
from ldae.ops.patch import patchify, unpatchify


def test_patchify_roundtrip_and_order():
    x = torch.randn(2, 3, 8, 12)
    tokens = patchify(x, 4)
    assert tokens.shape == (2, 6, 48)
    assert torch.equal(unpatchify(tokens, 4, 3, (2, 3)), x)
    # a patch vector is (row, col, channel): its first 3 entries are the RGB of the patch's top-left pixel
    assert torch.equal(tokens[0, 1, :3], x[0, :, 0, 4])


def test_pca_exact_when_d_equals_D():
    x = smooth_images()
    pca = PatchPCA(4, 48)
    pca.fit([x[:32], x[32:]])
    assert torch.allclose(pca.decode(pca.encode(x)), x, atol=1e-4)


def test_pca_basis_orthonormal_sorted_and_shapes():
    x = smooth_images()
    pca = PatchPCA(4, 6)
    stats = pca.fit([x])
    V = pca.basis()
    assert V.shape == (48, 48)
    assert torch.allclose(V.T @ V, torch.eye(48), atol=1e-4)
    assert torch.all(pca.eigenvalues[:-1] >= pca.eigenvalues[1:] - 1e-6)
    z = pca.encode(x)
    assert z.shape == (64, 6, 4, 4)
    assert pca.decode(z).shape == x.shape
    assert 0 < stats["explained_variance"] < 1


def test_pca_global_scaling_gives_unit_average_variance():
    x = smooth_images(256)
    pca = PatchPCA(4, 4, scaling="global")
    pca.fit([x])
    z = pca.encode(x)
    assert float(z.var(dim=(0, 2, 3), unbiased=False).mean()) == pytest.approx(1.0, rel=1e-3)
    # one global factor, not whitening: the components keep their variance ordering
    v = z.var(dim=(0, 2, 3))
    assert v[0] > v[-1]


def test_pca_reconstruction_error_decreases_with_d():
    x = smooth_images(128)
    errs = []
    for d in (1, 4, 16, 48):
        pca = PatchPCA(4, d)
        pca.fit([x])
        errs.append(float((pca.decode(pca.encode(x)) - x).pow(2).mean()))
    assert errs == sorted(errs, reverse=True) and errs[-1] < 1e-8


def test_pca_streaming_fit_equals_one_shot():
    x = smooth_images(96)
    a, b = PatchPCA(4, 8), PatchPCA(4, 8)
    a.fit([x])
    b.fit([x[:40], x[40:70], x[70:]])
    # the leading directions (the ones used) agree; the null space of these rank-deficient images is arbitrary
    assert torch.allclose(a.components[:, :8], b.components[:, :8], atol=1e-4)
    assert torch.allclose(a.eigenvalues, b.eigenvalues, atol=1e-5)
    assert torch.allclose(a.mean, b.mean, atol=1e-6)


def test_pixels_tokenizer_is_identity():
    x = torch.randn(2, 3, 8, 8)
    t = Pixels(4)
    assert t.latent_dim == 48 and t.encode(x).shape == (2, 48, 2, 2)
    assert torch.equal(t.decode(t.encode(x)), x)
    assert torch.equal(t.basis(), torch.eye(48))


def test_effective_latent_dim():
    assert effective_latent_dim(32, 768) == 32
    assert effective_latent_dim(32, 48) == 2
    assert effective_latent_dim(8, 48) == 1  # never below 1
    assert effective_latent_dim(768, 48) == 48


def test_build_and_cache(tmp_path):
    cfg = OmegaConf.create({"name": "patch_pca", "patch_size": 4, "latent_dim": 128, "latent_units": "paper",
                            "center": True, "scaling": "global", "num_patches": 10000, "seed": 0})
    tok = build_tokenizer(cfg)
    assert tok.latent_dim == 8
    x = smooth_images()
    calls = []

    def batches():
        calls.append(1)
        return [x]

    r1 = fit_or_load(tok, batches, {"data": "a"}, str(tmp_path))
    tok2 = build_tokenizer(cfg)
    r2 = fit_or_load(tok2, batches, {"data": "a"}, str(tmp_path))
    assert not r1["cached"] and r2["cached"] and len(calls) == 1
    assert torch.equal(tok.components, tok2.components)
    r3 = fit_or_load(build_tokenizer(cfg), batches, {"data": "b"}, str(tmp_path))  # other data: refit
    assert not r3["cached"] and len(calls) == 2


def test_latent_dim_bounds():
    with pytest.raises(ValueError, match="latent_dim=49"):
        PatchPCA(4, 49)
