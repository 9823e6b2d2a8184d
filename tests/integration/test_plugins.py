"""Users' own parts by `_target_` (ldae/plugins.py): a tokenizer, a dataset and a schedule from a package
outside ldae/ (tests/plugins/mypkg), selected from a user's config folder on hydra.searchpath."""

from pathlib import Path

import pytest
from helpers import PLUGINS, assert_top1_of, plugin_user_conf


@pytest.fixture
def user(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    return f"hydra.searchpath=[file://{plugin_user_conf(tmp_path)}]"


def test_plugin_tokenizer_and_dataset_train_and_probe(user, tmp_path, monkeypatch):
    from ldae.cli import compose_config, precheck_cli
    from ldae.evaluation import evaluate_checkpoint
    from ldae.resume import fingerprint
    from ldae.train import run

    monkeypatch.setenv("LDAE_CACHE", str(tmp_path / "cache"))
    args = [user, "experiment=ldae", "scale=smoke", "tokenizer=randproj", "data=stripes", "baselines=false"]
    precheck_cli("ldae-train", args)  # names checked against no registry, the interface instead: no exit
    cfg = compose_config(args)
    res = run(cfg, tmp_path / "run")
    assert_top1_of(res["probe_top1"], 96)  # of Stripes' n=96 val images
    assert res["pretrain_loss"] > 0
    tok = res["tokenizer"]
    assert tok["name"] == "randproj" and tok["cached"] is False and tok["patches"] > 0
    artifact = Path(tok["path"])
    assert artifact.name == f"randproj-{tok['key']}.pt" and artifact.exists()
    # The target's own argument keys the artifact and the resume fingerprint; ldae's own keys do not leak in.
    from ldae.data import data_fingerprint
    from ldae.tokenizers import artifact_key, build_tokenizer

    other = compose_config(args + ["tokenizer.gain=2.0"])
    assert build_tokenizer(other.tokenizer).inner.gain == 2.0
    fp = {**data_fingerprint(cfg.data), "fit_images": cfg.tokenizer.fit_images,
          "fit_sample": {"kind": "seeded_random", "seed": 0}}
    assert artifact_key(build_tokenizer(cfg.tokenizer), fp) == tok["key"]
    assert artifact_key(build_tokenizer(other.tokenizer), fp) != tok["key"]
    assert fingerprint(other) != fingerprint(cfg)
    assert data_fingerprint(cfg.data)["plugin"] == {"target": "mypkg.data.Stripes", "args": {"n": 96}}
    # ldae-probe rebuilds both parts from the checkpoint's config.
    ecfg = compose_config([f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}"], "eval")
    r = evaluate_checkpoint(ecfg, tmp_path / "probe")
    assert_top1_of(r["probe_top1"], 96)


def test_stripes_reach_the_model_as_its_input(user, compose):
    from ldae.data import build_dataset

    ds = build_dataset(compose(user, "data=stripes", "data.num_val=10").data, "val")
    x, y, i = ds[3]
    assert x.shape == (3, 16, 16) and x.min() >= -1 and x.max() <= 1 and x.min() < -0.5 < 0.5 < x.max()
    assert (x[0] == x[1]).all() and int(y) in (0, 1) and i == 3 and len(ds) == 10


def test_plugin_errors_are_config_errors(user, compose):
    from ldae.config import ConfigError, validate
    from ldae.diffusion.schedules import schedule_from_config
    from ldae.tokenizers import build_tokenizer

    with pytest.raises(ConfigError, match=r"tokenizer._target_=mypkg.nope cannot be imported"):
        validate(compose(user, "tokenizer=randproj", "tokenizer._target_=mypkg.nope"))
    with pytest.raises(ConfigError, match=r"tokenizer.name=patch_pca .* a plug-in needs a name of its own"):
        validate(compose(user, "tokenizer=randproj", "tokenizer.name=patch_pca"))
    with pytest.raises(ConfigError, match=r"missing required value 'tokenizer._target_'"):
        validate(compose("tokenizer=plugin"))
    with pytest.raises(ConfigError, match=r"failed to build \(TypeError: .*unexpected keyword argument 'gian'"):
        build_tokenizer(compose(user, "tokenizer=randproj", "+tokenizer.gian=2").tokenizer)
    sched = schedule_from_config({"_target_": "mypkg.schedules.sqrt_sigma", "name": "sqrt", "num_steps": 10,
                                  "sigma_max": 2.0})
    assert sched.name == "sqrt" and float(sched.sigma[10]) == pytest.approx(2.0) and float(sched.sigma[0]) == 0
    with pytest.raises(ConfigError, match=r"gives gamma \(10,\) and sigma \(10,\); allowed: both \(11,\)"):
        schedule_from_config({"_target_": "mypkg.schedules.too_short", "name": "short", "num_steps": 10})
    validate(compose(user, "schedule=plugin", "schedule._target_=mypkg.schedules.sqrt_sigma", "schedule.name=sqrt"))


def test_plugin_backbone_trains_probes_and_reloads(user, tmp_path, monkeypatch):
    """model._target_: a backbone of the user's own gets ldae's geometry and the scale's width, trains, probes,
    and ldae-probe rebuilds it from the checkpoint's config."""
    import torch

    from ldae.cli import compose_config
    from ldae.config import validate
    from ldae.lit.pretrain import PretrainModule
    from ldae.evaluation import evaluate_checkpoint
    from ldae.train import run
    from mypkg.backbones import TokenMLP

    monkeypatch.setenv("LDAE_CACHE", str(tmp_path / "cache"))
    args = [user, "experiment=ldae", "scale=smoke", "model=plugin", "model._target_=mypkg.backbones.TokenMLP",
            "+model.width_scale=2", "baselines=false"]
    cfg = compose_config(args)
    validate(cfg)
    res = run(cfg, tmp_path / "run")
    assert res["pretrain_loss"] > 0 and res["probe_top1"] > 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    module = PretrainModule(torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["config"])
    net = module.backbone
    assert isinstance(net, TokenMLP) and net.learn_sigma is False
    # smoke: 16 px images, 4 px patches, micro-1-1 (width 32, 2 blocks); the own argument doubles the width
    assert net.hidden_size == 64 and len(net.blocks) == 2 and net.grid == 4
    x = torch.randn(2, module.backbone.embed.in_channels, 4 * net.embed.stride[0], 4 * net.embed.stride[0])
    assert net(x, torch.tensor([1, 5])).shape[1] == net.out_channels
    r = evaluate_checkpoint(compose_config([f"ckpt_path={ckpt}"], "eval"), tmp_path / "probe")
    assert r["probe_top1"] == pytest.approx(res["probe_top1"], abs=1e-6)
    # What folds or reads DiT's own blocks says so in one line.
    from ldae.lit.features import EncoderFeatures, GridFeatures
    from ldae.timm_export import export_checkpoint

    with pytest.raises(ValueError, match=r"holds a backbone of your own \(model._target_=mypkg.backbones.TokenMLP\)"):
        export_checkpoint(str(ckpt), 10, tmp_path / "export")
    enc = EncoderFeatures(net, module.tokenizer, module.objective, module.schedule)
    with pytest.raises(ValueError, match=r"^the probe grid reads block_features.* TokenMLP has none$"):
        GridFeatures(enc, [1, 2])


def test_plugin_backbone_refusals(user, compose):
    from ldae.config import ConfigError, validate

    base = (user, "model=plugin")
    with pytest.raises(ConfigError, match=r"model._target_=mypkg.backbones.NoFeatures is not a backbone: it lacks "
                                          r"forward_features; a model plug-in needs forward\(x, t, y\)"):
        validate(compose(*base, "model._target_=mypkg.backbones.NoFeatures"))
    with pytest.raises(ConfigError, match=r"^probe=finetune folds ldae's DiT into a timm ViT"):
        validate(compose(*base, "model._target_=mypkg.backbones.TokenMLP", "probe=finetune"))
    with pytest.raises(ConfigError, match=r"^speed.activation_checkpointing=true needs set_grad_checkpointing"):
        validate(compose(*base, "model._target_=mypkg.backbones.TokenMLP", "speed.activation_checkpointing=true"))
    with pytest.raises(ConfigError, match=r"missing required value 'model._target_'"):
        validate(compose("model=plugin"))
