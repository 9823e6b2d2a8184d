"""The DiT rows end to end at scale=smoke: class conditioning, learned σ, ε prediction, generation; the probe
of a class-conditional row reads the null class, never the label."""

import json

import pytest
import torch
from helpers import assert_top1_of, png_pixels

DIT_ROW = ["experiment=ldae", "scale=smoke", "schedule=ddpm_linear", "target=eps", "model.class_cond=true",
           "model.learn_sigma=true", "model.cond_ratio=1.0", "gen.enabled=true", "trainer.max_epochs=1", "probe.epochs=1",
           "baselines=false"]


@pytest.fixture(scope="module")
def dit_run(tmp_path_factory):
    # Not the shared smoke run: the DiT row's own overrides (class conditioning, learned σ, ε, generation).
    from ldae.cli import compose_config
    from ldae.train import run

    out = tmp_path_factory.mktemp("dit")
    return out, run(compose_config(DIT_ROW), out)


def test_dit_row_trains_probes_and_generates(dit_run):
    out, res = dit_run
    saved = json.loads((out / "results.json").read_text())
    assert_top1_of(saved["probe_top1"], 128)  # of data.num_val=128 shapes
    assert saved["pretrain_loss"] > 0
    assert saved["gen_fid"] == "no FID weights"
    # gen.grid_samples=16 at smoke: a 4 x 4 grid of 16 px images with make_grid's 2 px padding.
    size, px = png_pixels(out / "samples.png")
    assert size == (4 * (16 + 2) + 2, 4 * (16 + 2) + 2) and px.std() > 0
    header = (out / "csv" / "pretrain" / "metrics.csv").read_text().splitlines()[0]
    assert "pretrain/vb" in header and "pretrain/mse" in header
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    sd = ckpt["state_dict"]
    assert sd["backbone.y_embedder.embedding_table.weight"].shape[0] == 11  # 10 classes + null
    assert sd["backbone.final_layer.linear.weight"].shape[0] == 2 * 2  # patch 1, d = 2 latents, x2 for σ


def test_probe_of_a_class_conditional_row_feeds_the_null_class(compose):
    from ldae.lit.pretrain import PretrainModule
    from ldae.lit.features import EncoderFeatures
    from omegaconf import OmegaConf

    cfg = compose(*DIT_ROW[:-2], "model.adaln_zero=false")
    module = PretrainModule(OmegaConf.to_container(cfg, resolve=True))
    module.tokenizer.fit([torch.rand(32, 3, 16, 16) * 2 - 1])
    net = module.backbone
    ext = EncoderFeatures(net, module.tokenizer, module.objective, module.schedule, t=10)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    feats = ext(x)
    z0, t = module.tokenizer.encode(x), torch.full((4,), 10)
    with torch.no_grad():
        null = net.forward_features(z0, t, net.null_labels(4))
        labelled = net.forward_features(z0, t, torch.tensor([0, 1, 2, 3]))
    assert torch.allclose(feats, null, atol=1e-6) and not torch.allclose(feats, labelled, atol=1e-4)


@pytest.mark.parametrize("overrides, message", [
    (["model.class_cond=true", "model.class_dropout=0"], "model.class_cond=true needs model.class_dropout > 0"),
    (["model.learn_sigma=true"], "model.learn_sigma=true needs target.predict eps or x0"),
    (["model.name=micro-1-1/3"], "model patch 3 does not divide"),
    (["gen.enabled=true", "gen.sampler=euler"], "unknown gen.sampler 'euler'"),
])
def test_dit_config_errors(compose, overrides, message):
    from ldae.config import ConfigError, validate

    with pytest.raises(ConfigError, match=message):
        validate(compose(*overrides))


def test_dit_patch_from_name(compose):
    from ldae.plan import geometry

    class Tok:  # a patch tokenizer: latent (B, d, H/p, W/p), read with patch 1 unless the model says otherwise
        name, patch_size, patch_dim, latent_dim, latent_channels, latent_patch = "patch_pca", 2, 12, 4, 4, 1

    cfg = compose("model.name=micro-1-1/2", "target.predict=eps", "target.input=latent")
    io = geometry(cfg, Tok()).backbone.io()
    assert io == {"input_size": 8, "patch_size": 2, "in_channels": 4, "out_channels": 4, "out_patch_size": 2}
    cfg = compose("model.name=micro-1-1/2", "target.predict=image", "target.input=image")
    io = geometry(cfg, Tok()).backbone.io()
    assert io["patch_size"] == 4 and io["out_patch_size"] == 4
