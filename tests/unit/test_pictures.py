"""Pictures of a run (ldae/pictures.py): PCA bases as filters (Fig. 4), denoising panels decoded the way the
objective reads the prediction, latent noise in pixels (Fig. 7), the probe's curve."""

import numpy as np
import pytest
import torch
from helpers import png_pixels, smooth_images
from omegaconf import OmegaConf
from PIL import Image

from ldae.pictures import MIN_PX, denoise_panel, latent_noise, pca_bases, probe_curve
from ldae.tokenizers import PatchPCA, Pixels


@pytest.fixture(scope="module")
def pca():
    tok = PatchPCA(4, 8)
    tok.fit([smooth_images()])
    return tok


def test_pca_bases_show_the_top_components_as_patches(pca, tmp_path):
    path = pca_bases(pca, tmp_path / "bases.png", k=16)
    img = np.asarray(Image.open(path).convert("RGB")).astype(float)  # (H, W, 3)
    tile = MIN_PX  # a 4x4 filter upsampled x16, grid padding 2
    assert img.shape == (2 + (tile + 2) * 2, 2 + (tile + 2) * 8, 3)  # 16 filters, 8 per row
    for i in (0, 1, 9):  # filter i = component i reshaped (row, col, channel) to a patch, 0 at mid-gray
        comp = pca.basis()[:, i]
        want = pca.unpatchify(comp.view(1, 1, -1), (1, 1))[0] / comp.abs().max()  # (3, 4, 4) in [-1, 1]
        r, c = divmod(i, 8)
        y0, x0 = 2 + r * (tile + 2), 2 + c * (tile + 2)
        got = img[y0 + 8: y0 + tile: 16, x0 + 8: x0 + tile: 16].transpose(2, 0, 1) / 255 * 2 - 1  # block centres
        assert np.allclose(got, want.numpy(), atol=0.02), i
    assert pca_bases(Pixels(4), tmp_path / "none.png") is None  # no PCA basis: no picture


class Oracle(torch.nn.Module):
    """A backbone that returns a given prediction (the true ε, or the clean image)."""
    learn_sigma = False

    def __init__(self):
        super().__init__()
        self.answer = None

    def forward(self, inp, t, y=None):
        return self.answer


@pytest.mark.parametrize("experiment", ["trajectory/07_patch_pca", "ldae"])  # ε in the latent; the image
def test_denoise_panel_maps_a_perfect_prediction_back_to_the_clean_image(compose, pca, experiment, monkeypatch):
    from ldae.lit.pretrain import PretrainModule

    cfg = compose(f"experiment={experiment}", "tokenizer.latent_dim=128")  # paper units: d = 8 of D = 48
    module = PretrainModule(OmegaConf.to_container(cfg, resolve=True), pca)
    oracle = Oracle()
    monkeypatch.setattr(module, "encoder", lambda use_ema=True: oracle)
    x = pca.decode(pca.encode(smooth_images(4, seed=1)))  # images the tokenizer represents exactly
    z0 = pca.encode(x)
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(3))  # the panel's own noise (seed 3)
    oracle.answer = eps if module.objective.predict == "eps" else x
    clean, noised, denoised = denoise_panel(module, x, seed=3)
    assert clean is x and noised.shape == denoised.shape == x.shape
    assert torch.allclose(denoised, x, atol=1e-3)
    assert not torch.allclose(noised, x, atol=1e-2)


def test_latent_noise_and_probe_curve_write_pngs(pca, tmp_path):
    p = latent_noise(pca, smooth_images(1)[0], [0.0, 0.5, 1.414], tmp_path / "noise.png")
    with Image.open(p) as im:
        assert im.size[0] > 3 * im.size[1]  # one strip: original + 3 noise levels
    c = probe_curve([{"epoch": 0, "top1": 10.0}, {"epoch": 1, "top1": 20.0}], tmp_path / "curve.png", "t")
    size, px = png_pixels(c)
    assert size == (462, 330) and px.std() > 0  # figsize (4.2, 3.0) at save_figure's 110 dpi; a drawn curve
