"""The run plan (ldae/plan.py): every scale x experiment resolves, and its geometry is the built model's."""

import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from ldae.cli import CONF_DIR, compose_config, group_options
from ldae.config import ConfigError, validate
from ldae.plan import resolve

SCALES = group_options("scale")
EXPERIMENTS = ["ldae"] + [f"trajectory/{p.stem}" for p in sorted((CONF_DIR / "experiment" / "trajectory").glob("*.yaml"))]


def _compose(experiment: str, scale: str, *extra: str):
    return compose_config([f"experiment={experiment}", f"scale={scale}", *extra])


def _needs_data_files(e: ConfigError) -> bool:
    """Refused only because data or weights are not on this machine (an ImageNet root, a dataset's files, the
    perceptual loss's VGG weights at the larger scales)."""
    first = str(e).split(";")[0]
    return "data.root" in first or "perceptual.backbone_path" in first


def test_plan_is_torch_free():
    code = "import ldae.plan, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_validate_is_torch_free():
    """A whole config check (the plan resolved last) and a refused one leave torch unloaded: the device is asked
    for only where a stage reads it, so a bad command line fails without torch's import."""
    code = ("import sys\n"
            "from ldae.cli import compose_config\n"
            "from ldae.config import ConfigError, validate\n"
            "validate(compose_config(['experiment=ldae', 'scale=smoke']))\n"
            "try:\n"
            "    validate(compose_config(['data.batch_size=64', 'trainer.accelerator=cpu', 'trainer.devices=3']))\n"
            "except ConfigError as e:\n"
            "    print(e)\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["data.batch_size=64 is not divisible by the world size 3 (trainer.devices x "
                                "trainer.num_nodes); allowed: multiples of 3", "False"]


def test_the_record_keeps_the_device():
    plan = resolve(_compose("ldae", "smoke", "trainer.accelerator=cpu"))
    rec = plan.record()
    assert (rec["device"], rec["accelerator"]) == ("cpu", "cpu") and "requested_accelerator" not in rec
    assert set(rec) == {"image_size", "geometry", "world_size", "pretrain", "probe", "finetune", "device",
                        "accelerator", "input", "prediction_space", "clean_input"}


def test_the_matrix_is_complete():
    assert set(SCALES) == {"smoke", "cpu", "mid", "paper"} and len(EXPERIMENTS) == 14


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_scale_experiment_resolves(scale, experiment):
    cfg = _compose(experiment, scale)
    plan = resolve(cfg)
    lat, bb, tok = plan.latent, plan.backbone, cfg.tokenizer
    p, size = tok.patch_size, cfg.data.image_size
    assert lat.patch_dim == 3 * p * p and lat.grid * p == size
    assert lat.stride * lat.patch == p and lat.map_size * lat.stride == size
    assert lat.d == lat.channels * lat.patch**2 and 1 <= lat.d <= lat.patch_dim
    if tok.name == "none":
        assert lat.d == lat.patch_dim
    elif tok.latent_units == "paper":
        assert lat.d_paper == tok.latent_dim
    image_in, image_out = cfg.target.input == "image", cfg.target.predict in ("image", "image_pca")
    assert plan.prediction_space == ("image" if image_out else "latent")
    assert bb.in_channels == (3 if image_in else lat.channels)
    assert bb.out_channels == (3 if image_out else lat.channels)
    assert bb.input_size == (size if image_in else lat.map_size)
    assert bb.num_tokens == (bb.input_size // bb.patch_size) ** 2
    # The backbone reads the tokenizer's tokens: one per p x p pixels unless a "/P" model groups them.
    assert bb.num_tokens * (bb.patch_size * (1 if image_in else lat.stride)) ** 2 == size * size
    b = plan.pretrain
    assert b.effective == cfg.data.batch_size == b.world_size * b.per_device * b.accumulate
    assert b.lr == pytest.approx(cfg.optim.base_lr * cfg.data.batch_size / 256)
    assert (plan.probe is not None) == (cfg.probe.name == "linear")
    assert plan.clean_input == cfg.probe.clean_input and plan.device in ("cpu", "cuda")
    # The backbone built from the plan, at this scale's real size: on the meta device (shapes, no memory).
    from ldae.lit.pretrain import build_backbone_for

    with torch.device("meta"):
        net = build_backbone_for(cfg, plan.geometry)
    assert net.x_embedder.proj.in_channels == bb.in_channels and net.patch_size == bb.patch_size
    assert net.x_embedder.num_patches == bb.num_tokens == net.pos_embed.shape[1]
    sigma = 2 if cfg.model.learn_sigma else 1
    assert net.final_layer.linear.out_features == bb.out_patch_size**2 * bb.out_channels * sigma
    try:
        validate(cfg)  # the config checks ask the same derivation: they accept what resolves
    except ConfigError as e:
        if not _needs_data_files(e):
            raise
        pytest.skip(f"the plan resolved; validation needs data files this machine lacks: {e}")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_smoke_model_has_the_planned_geometry(experiment):
    from ldae.lit.pretrain import PretrainModule

    cfg = _compose(experiment, "smoke")
    plan = resolve(cfg)
    module = PretrainModule(OmegaConf.to_container(cfg, resolve=True))
    assert resolve(cfg, tokenizer=module.tokenizer).geometry == plan.geometry  # config-derived = built tokenizer
    bb, net = plan.backbone, module.backbone
    assert net.x_embedder.proj.in_channels == bb.in_channels and net.patch_size == bb.patch_size
    assert net.x_embedder.num_patches == bb.num_tokens == net.pos_embed.shape[1]
    x = torch.rand(2, 3, cfg.data.image_size, cfg.data.image_size) * 2 - 1
    z0, _, t, inp = module.corrupt(x, torch.arange(2), epoch=0)
    assert tuple(z0.shape) == plan.latent.shape(2)  # (B, C, H/s, W/s)
    assert tuple(inp.shape) == (2, bb.in_channels, bb.input_size, bb.input_size)
    with torch.no_grad():
        out = net(inp, t, torch.zeros(2, dtype=torch.long) if module.class_cond else None)
    side = bb.out_patch_size * int(bb.num_tokens**0.5)
    sigma = 2 if cfg.model.learn_sigma else 1
    assert tuple(out.shape) == (2, bb.out_channels * sigma, side, side)


@pytest.mark.parametrize("overrides, message", [
    (["data.image_size=30"], "data.image_size=30 is not divisible by tokenizer.patch_size=4"),
    (["model.name=micro-1-1/3"], "model patch 3 does not divide the 4-token grid"),
    (["tokenizer=vqgan", "model.name=micro-1-1/4"],
     "model patch 4 (model.name=micro-1-1/4) does not match tokenizer.dit_patch=2"),
    (["tokenizer=vqgan", "tokenizer.dit_patch=3"], "tokenizer.dit_patch=3 does not fit tokenizer.patch_size=4"),
    (["tokenizer.latent_units=absolute", "tokenizer.latent_dim=49"],
     "tokenizer.latent_dim=49 is out of range; allowed: 1..48 (the patch dimension D = 3*4*4)"),
    (["data.batch_size=64", "trainer.accelerator=cpu", "trainer.devices=3"],
     "data.batch_size=64 is not divisible by the world size 3"),
])
def test_bad_geometry_fails_with_the_config_message(overrides, message):
    cfg = _compose("ldae", "smoke", *overrides)
    for check in (resolve, validate):  # the same words from the plan and from the config checks
        with pytest.raises(ConfigError) as e:
            check(cfg)
        assert str(e.value).startswith(message)


def test_plugin_geometry_comes_from_the_built_tokenizer():
    cfg = _compose("ldae", "smoke")
    OmegaConf.set_struct(cfg, False)
    cfg.tokenizer["_target_"] = "my.Tokenizer"  # resolve never builds it
    assert resolve(cfg).geometry is None

    class Tok:  # a built plug-in: 8 channels at stride 2, read in 2 x 2 patches (4-pixel tokens)
        patch_size, patch_dim, latent_dim, latent_channels, latent_patch = 4, 48, 32, 8, 2

    lat = resolve(cfg, tokenizer=Tok()).latent
    assert (lat.channels, lat.stride, lat.map_size, lat.grid, lat.d) == (8, 2, 8, 4, 32)
    bb = resolve(cfg, tokenizer=Tok()).backbone  # experiment=ldae reads images: pixel patch = stride x 2
    assert (cfg.target.input, bb.in_channels, bb.input_size, bb.patch_size, bb.num_tokens) == ("image", 3, 16, 4, 16)


def test_probe_and_finetune_batches():
    from ldae.plan import finetune_batches, probe_batches

    pr = _compose("ldae", "smoke", "probe.batch_size=100", "probe.feature_batch_size=32").probe
    b = probe_batches(pr, 60, 2, cached=False)  # 60 images: one 60-batch, 32-pieces -> accum 1, 30 per rank
    assert (b.per_device, b.accumulate, b.effective) == (30, 1, 60)
    b = probe_batches(pr, 1000, 1, cached=False)  # 100 = 3 x 33 (1 image lost to the pieces)
    assert (b.per_device, b.accumulate, b.effective) == (33, 3, 99)
    assert b.lr == pytest.approx(b.base_lr * 99 / 256)
    ft = _compose("ldae", "smoke", "probe=finetune", "probe.batch_size=64", "probe.device_batch_size=16").probe
    b = finetune_batches(ft, 33)  # an even batch: 32 = 2 x 16
    assert (b.per_device, b.accumulate, b.effective, b.world_size) == (16, 2, 32, 1)
