"""Trained tokenizers (patch AE/VAE, conv VAE), PCA subspace accuracy, artifacts and config errors."""

import socket

import pytest
import torch
from helpers import smooth_images
from omegaconf import OmegaConf

from ldae.config import ConfigError, validate
from ldae.lit.tokenizer import fit_trainable
from ldae.tokenizers import PatchPCA, build_tokenizer
from ldae.ops.patch import unpatchify

# The optimisation keys every trained tokenizer node holds, at conf/tokenizer/*.yaml's values.
TRAIN = {"train_batch_size": 16, "weight_decay": 0.0, "disc_lr": None, "accelerator": "cpu", "precision": "32-true",
         "norm_batches": 8, "seed": 0}
TINY_VQGAN = {"name": "vqgan", "patch_size": 4, "dit_patch": 2, "latent_dim": 8, "latent_units": "absolute",
              "block_channels": [8, 16], "layers_per_block": 1, "norm_groups": 4, "mid_attention": True,
              "pretrained_path": None, "recon_loss": "l1", "kl_weight": 1e-6, "normalize": "scale",
              "posterior": "sample",
              "perceptual": {"weight": 1.0, "backbone_path": None, "linear_path": None, "random_backbone": True},
              "adversarial": {"weight": 0.5, "start": 4, "channels": 8, "layers": 1},
              "train_steps": 12, "lr": 2e-3, "betas": [0.5, 0.9], **TRAIN}


def _loader(x, bs=16):
    ds = torch.utils.data.TensorDataset(x)
    return torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, drop_last=True,
                                       generator=torch.Generator().manual_seed(0))


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_pca_top_d_subspace_matches_float64_eigh():
    # Patches with a planted spectrum that has a clear gap after d = 6 (D = 48).
    g = torch.Generator().manual_seed(0)
    D, d, n = 48, 6, 20000
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    spectrum = torch.cat([torch.linspace(4.0, 2.0, d), torch.linspace(0.2, 0.01, D - d)]).double()
    tokens = (torch.randn(n, D, generator=g, dtype=torch.float64) * spectrum.sqrt()) @ q.T + 0.3  # (n, D)
    x = unpatchify(tokens.float().reshape(n // 16, 16, D), 4, 3, (4, 4))  # (n/16, 3, 16, 16)
    pca = PatchPCA(4, d)
    pca.fit([x[: len(x) // 2], x[len(x) // 2:]])
    # reference: float64 eigendecomposition of the same patches' covariance
    t = tokens.float().double()
    cov = torch.cov(t.T, correction=0)
    _, vecs = torch.linalg.eigh(cov)
    ref = vecs[:, -d:]  # (D, d)
    cos = torch.linalg.svdvals(pca.components[:, :d].double().T @ ref).clamp(max=1.0)
    largest_angle = float(torch.arccos(cos.min()))
    assert largest_angle < 1e-3, largest_angle


def test_pca_whitening_gives_unit_variance_per_component():
    x = smooth_images(256)
    pca = PatchPCA(4, 6, scaling="whiten")
    pca.fit([x])
    z = pca.encode(x)
    v = z.var(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(v, torch.ones(6), rtol=1e-2)
    default = PatchPCA(4, 6)
    default.fit([x])
    assert torch.allclose(pca.decode(z), default.decode(default.encode(x)), atol=1e-4)  # same projection


@pytest.mark.parametrize("name", ["patch_ae", "patch_vae"])
def test_patch_autoencoders_train_and_normalise(name):
    cfg = {"name": name, "patch_size": 4, "latent_dim": 8, "latent_units": "absolute", "recon_loss": "l2",
           "kl_weight": 1e-6, "normalize": "scale", "posterior": "sample", "train_steps": 40, "lr": 3e-3,
           "betas": [0.9, 0.999], "perceptual": {"weight": 0.0}, "adversarial": {"weight": 0.0}, **TRAIN}
    tok = build_tokenizer(OmegaConf.create(cfg))
    x = smooth_images(128)
    stats = fit_trainable(tok, _loader(x))
    assert stats["loss_last"] < 0.5 * stats["loss_first"]
    assert ("kl" in stats["loss_terms"]) == (name == "patch_vae")
    assert "perceptual" not in stats["loss_terms"] and "adv_g" not in stats["loss_terms"]
    tok.eval()
    z = tok.encode(x)
    assert z.shape == (128, 8, 4, 4) and tok.basis() is None
    assert float(z.pow(2).mean()) == pytest.approx(1.0, rel=0.05)  # the measured latent scale
    assert float((tok.decode(z) - x).pow(2).mean()) < 0.05


def test_vqgan_trains_and_zero_weights_remove_terms(no_network):
    x = smooth_images(64)
    tok = build_tokenizer(OmegaConf.create(TINY_VQGAN))
    assert tok.latent_channels == 2 and tok.latent_dim == 8 and tok.stride == 2
    stats = fit_trainable(tok, _loader(x))
    assert stats["loss_last"] < stats["loss_first"]
    hist = tok.history
    assert {"rec", "kl", "perceptual", "adv_g"} <= set(hist[-1]) and "disc" in hist[-1] and "disc" not in hist[0]
    assert tok.describe() == {"perceptual_random_backbone": True}
    tok.eval()
    assert tok.encode(x).shape == (64, 2, 8, 8) and tok.decode(tok.encode(x)).shape == x.shape
    # row 02: perceptual weight 0; row 03: adversarial weight 0 too -> the terms are absent
    cfg = {**TINY_VQGAN, "train_steps": 2, "perceptual": {"weight": 0.0}}
    tok2 = build_tokenizer(OmegaConf.create(cfg))
    fit_trainable(tok2, _loader(x))
    assert "perceptual" not in tok2.history[-1] and "adv_g" in tok2.history[-1]
    cfg["adversarial"] = {"weight": 0.0}
    tok3 = build_tokenizer(OmegaConf.create(cfg))
    fit_trainable(tok3, _loader(x))
    assert set(tok3.history[-1]) == {"rec", "kl", "total"} and tok3.describe() == {}


def test_sd_vae_folder_loads_as_vqgan(tmp_path, no_network):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    ref = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(8, 16), layers_per_block=1, latent_channels=2, norm_num_groups=4)
    ref.save_pretrained(tmp_path / "sd-vae")
    tok = build_tokenizer(OmegaConf.create({**TINY_VQGAN, "pretrained_path": str(tmp_path / "sd-vae")}))
    x = smooth_images(32)
    stats = fit_trainable(tok, _loader(x))
    assert stats["pretrained"] and "train_steps" not in stats  # public weights are used as they are
    tok.eval()
    with torch.no_grad():
        want = ref.decode(ref.encode(x).latent_dist.mean).sample
        got = tok.decode(tok.encode(x))
    assert torch.allclose(got, want, atol=1e-5)
    from ldae.cli import compose_config

    cfg = compose_config(["experiment=ldae", "scale=smoke", "tokenizer=vqgan", f"tokenizer.pretrained_path={tmp_path / 'sd-vae'}",
                          "tokenizer.latent_units=absolute", "tokenizer.latent_dim=8"])
    validate(cfg)  # 2 channels x 2 x 2 = d 8 at stride 2: the folder fits
    cfg.tokenizer.latent_dim = 16
    with pytest.raises(ConfigError, match="has 2 latent channels at stride 2; this config needs 4 at stride 2"):
        validate(cfg)
    with pytest.raises(ValueError, match="latent channels"):  # a folder whose geometry does not fit
        build_tokenizer(OmegaConf.create({**TINY_VQGAN, "latent_dim": 16, "pretrained_path": str(tmp_path / "sd-vae")}))


def test_lpips_loads_local_weights(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    from ldae.tokenizers.losses import LPIPS

    features = make_layers(cfgs["D"])  # the layout of torchvision's vgg16 state dict, without the classifier
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "vgg.pth")
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(LPIPS.WIDTHS)}, tmp_path / "lin.pth")
    lp = LPIPS(str(tmp_path / "vgg.pth"), str(tmp_path / "lin.pth"))
    assert not lp.random_backbone
    x = smooth_images(2)
    assert float(lp(x, x).abs().max()) == 0.0 and float(lp(x, -x).min()) > 0


def test_lpips_heads_default_to_torchmetrics_file(tmp_path, compose):
    """linear_path=null: the VGG heads inside torchmetrics' wheel; with the same (random) VGG16 our distance is
    torchmetrics' own LPIPS, and validation needs only the backbone file."""
    from torchmetrics.functional.image.lpips import _LPIPS

    from ldae.tokenizers.losses import LPIPS
    from ldae.weights import torchmetrics_lpips_heads

    heads = torchmetrics_lpips_heads("vgg")
    assert heads is not None and heads.name == "vgg.pth" and "torchmetrics" in heads.parts
    torch.manual_seed(0)
    ref = _LPIPS(pretrained=True, net="vgg", pnet_rand=True).eval()  # shipped heads, random backbone, offline
    # torchmetrics splits vgg16.features into slices that keep the layer indices as module names.
    vgg = {f"features.{k.split('.', 1)[1]}": v for k, v in ref.net.state_dict().items()}
    torch.save(vgg, tmp_path / "vgg16.pth")
    ours = LPIPS(str(tmp_path / "vgg16.pth"), None)
    shipped = torch.load(heads, map_location="cpu", weights_only=True)
    assert all(torch.equal(ours.lins[i].weight, shipped[f"lin{i}.model.1.weight"]) for i in range(5))
    x, y = smooth_images(3), smooth_images(3, seed=1)
    with torch.no_grad():
        want = ref(x, y, normalize=False).flatten()
    assert torch.allclose(ours(x, y), want, rtol=1e-4, atol=1e-6) and float(want.min()) > 0

    ov = ["experiment=ldae", "tokenizer=vqgan", "tokenizer.perceptual.random_backbone=false"]
    validate(compose(*ov, f"tokenizer.perceptual.backbone_path={tmp_path / 'vgg16.pth'}"))
    with pytest.raises(ConfigError, match="tokenizer.perceptual.linear_path=/nope.pth does not exist"):
        validate(compose(*ov, f"tokenizer.perceptual.backbone_path={tmp_path / 'vgg16.pth'}",
                         "tokenizer.perceptual.linear_path=/nope.pth"))


@pytest.mark.parametrize("overrides, first_line", [
    (["tokenizer=vqgan", "tokenizer.perceptual.random_backbone=false"],
     "tokenizer.perceptual.weight=1.0 needs tokenizer.perceptual.backbone_path (a local torchvision vgg16"),
    (["tokenizer=patch_ae", "tokenizer.latent_units=absolute", "tokenizer.latent_dim=49"],
     "tokenizer.latent_dim=49 is out of range; allowed: 1..48"),
    (["tokenizer=vqgan", "tokenizer.pretrained_path=/nonexistent"], "tokenizer.pretrained_path=/nonexistent holds no"),
    (["tokenizer=vqgan", "tokenizer.dit_patch=3"], "tokenizer.dit_patch=3 does not fit tokenizer.patch_size=4"),
    (["tokenizer=patch_vae", "tokenizer.normalize=whiten"], "unknown tokenizer.normalize 'whiten'"),
])
def test_tokenizer_config_errors(compose, overrides, first_line):
    with pytest.raises(ConfigError) as e:
        validate(compose("experiment=ldae", *overrides))
    assert str(e.value).splitlines()[0].startswith(first_line), str(e.value)


def test_every_tokenizer_composes_at_every_scale(compose):
    for scale in ("smoke", "cpu", "paper"):
        for name in ("vqgan", "patch_vae", "patch_ae", "patch_pca", "none"):
            ov = ["experiment=ldae", f"scale={scale}", f"tokenizer={name}", "data=shapes"]
            if scale == "paper" and name == "vqgan":
                ov.append("tokenizer.perceptual.weight=0")  # paper scale needs real LPIPS paths or the SD-VAE
            cfg = compose(*ov)
            validate(cfg)
            if name == "vqgan":  # stride x DiT patch = the patch tokenizers' patch
                assert cfg.tokenizer.patch_size % cfg.tokenizer.dit_patch == 0
    with pytest.raises(ConfigError, match="perceptual"):
        validate(compose("experiment=ldae", "scale=paper", "tokenizer=vqgan", "data=shapes"))


def test_bench_pca_runs():
    from ldae.bench import bench_pca

    r = bench_pca(patches=4096, image_size=32, patch=8, batch_images=16, repeats=1)
    assert r["patches"] >= 4096 and r["fit_s"] > 0 and r["cov_product_f32_s"] > 0


def test_other_ranks_wait_for_rank_zero_artifact(tmp_path):
    import threading

    from ldae.tokenizers import fit_or_load

    cfg = OmegaConf.create({"name": "patch_pca", "patch_size": 4, "latent_dim": 8, "latent_units": "absolute",
                            "center": True, "scaling": "global", "num_patches": 10000, "seed": 0})
    x = smooth_images()
    out = {}
    waiter = threading.Thread(target=lambda: out.update(r=fit_or_load(build_tokenizer(cfg), lambda: [x], {"d": 1},
                                                                       str(tmp_path), timeout_s=60, rank=1)))
    waiter.start()
    r0 = fit_or_load(build_tokenizer(cfg), lambda: [x], {"d": 1}, str(tmp_path), rank=0)
    waiter.join(30)
    assert not r0["cached"] and out["r"]["cached"] and out["r"]["key"] == r0["key"]
