"""ldae-probe official=dit: an official DiT checkpoint (no ldae config) probed through the preset that rebuilds
its network; the probe's t_offset (DiT's step k = t - 1)."""

from pathlib import Path

import pytest
import torch
from helpers import assert_top1_of, expected_shapes, grey_folder

# A small network in the official key layout: width 32, 2 blocks, 4x4x4 latents (32 px at stride 8), DiT
# patch 2, learned sigma (8 outputs), 1000 classes + the null row.
SMALL = ["model.name=micro-1-1", "data.image_size=32", "trainer.precision=32-true", "speed.compile=false"]
PROBE = ["probe.epochs=1", "probe.batch_size=16", "probe.optimizer=adamw", "probe.lr_source=custom",
         "probe.augment=false", "probe.cache_features=true", "probe.feature_batch_size=16", "probe.t=10"]


def _extra(overrides: list[str]) -> str:
    return "official.extra_run=[" + ",".join(f"'{o}'" for o in overrides) + "]"  # quoted: each holds an '='


def _official_files(tmp_path: Path) -> tuple[Path, Path, dict]:
    from diffusers import AutoencoderKL

    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(s, generator=g) * 0.1 for k, s in expected_shapes(32, 2, 4, 8, 2, 2, 1000).items()}
    ckpt = tmp_path / "DiT-small-32x32.pt"
    torch.save(sd, ckpt)  # as DiT ships it: a plain state dict
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8),
                        layers_per_block=1, latent_channels=4, norm_num_groups=4)
    vae.save_pretrained(tmp_path / "vae")
    return ckpt, tmp_path / "vae", sd


def test_official_checkpoint_is_probed(tmp_path, monkeypatch):
    from ldae.cli import compose_config
    from ldae.errors import ConfigError
    from ldae.checkpoints import load_checkpoint_config, official_run_config
    from ldae.evaluation import evaluate_checkpoint

    monkeypatch.setenv("LDAE_CACHE", str(tmp_path / "cache"))
    ckpt, vae, sd = _official_files(tmp_path)
    with pytest.raises(ConfigError, match=r"holds no ldae config.*official DiT checkpoint: add official=dit"):
        load_checkpoint_config(str(ckpt))
    root = grey_folder(tmp_path / "imgs")
    args = [f"ckpt_path={ckpt}", "official=dit", f"official.vae_path={vae}", _extra(SMALL),
            "probe_data=imagefolder", f"probe_data.root={root}", "probe_data.num_classes=2", *PROBE]
    cfg = compose_config(args, "eval")
    run_cfg = official_run_config(cfg)
    m, tok = run_cfg.model, run_cfg.tokenizer
    assert (m.cond_ratio, m.learn_sigma, m.class_cond, run_cfg.data.num_classes) == (1.0, True, True, 1000)
    assert tok.name == "vqgan" and tok.pretrained_path == str(vae) and run_cfg.probe.t_offset == -1
    res = evaluate_checkpoint(cfg, tmp_path / "probe")
    assert_top1_of(res["probe_top1"], 48)  # of the folder's 2 x 24 val images
    assert res["probe_t"] == 10 and res["dit_step"] == 9
    # The probed network holds the checkpoint's weights and DiT's latent factor.
    from ldae.lit.pretrain import PretrainModule
    from ldae.checkpoints import load_official
    from omegaconf import OmegaConf

    module = PretrainModule(OmegaConf.to_container(run_cfg, resolve=True))
    load_official(module, torch.load(ckpt, weights_only=True), 0.18215)
    assert all(torch.equal(module.encoder(True).state_dict()[k], v) for k, v in sd.items())
    assert float(module.tokenizer.norm.scale) == pytest.approx(0.18215)
    with pytest.raises(ConfigError, match=r"official=dit needs probe_data=NAME"):
        official_run_config(compose_config([a for a in args if not a.startswith("probe_data")], "eval"))
    with pytest.raises(ConfigError, match=r"does not match official.run's network"):
        evaluate_checkpoint(compose_config([a if not a.startswith("official.extra_run") else
                                 _extra(SMALL + ["model.hidden_size=64"]) for a in args],
                                "eval"), tmp_path / "p2")


def test_probe_t_offset_conditions_the_backbone_on_t_plus_offset(compose):
    from ldae.config import ConfigError, validate
    from ldae.diffusion.objectives import Objective
    from ldae.diffusion.schedules import build_schedule
    from ldae.lit.features import EncoderFeatures
    from ldae.models.dit import DiT
    from ldae.tokenizers import Pixels

    torch.manual_seed(0)
    net = DiT(input_size=4, patch_size=1, in_channels=48, hidden_size=32, depth=2, num_heads=2, adaln_zero=False)
    tok, obj, sched = Pixels(4), Objective("eps", "latent", "one"), build_schedule("ddpm_linear", 50)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    shifted = EncoderFeatures(net, tok, obj, sched, t=10, t_offset=-1)(x)
    assert torch.allclose(shifted, EncoderFeatures(net, tok, obj, sched, t=9)(x))
    assert not torch.allclose(shifted, EncoderFeatures(net, tok, obj, sched, t=10)(x))
    assert EncoderFeatures(net, tok, obj, sched, t=10, t_offset=-1).identity()["t_offset"] == -1
    with pytest.raises(ConfigError, match=r"probe.t_offset=-1 with probe.t=0 conditions the backbone on step -1"):
        validate(compose("probe.t=0", "probe.t_offset=-1"))
