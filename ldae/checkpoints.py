"""Checkpoints read back for evaluation: the run config an ldae checkpoint stores, upgraded to today's keys,
and the network it holds; an official DiT checkpoint with the ldae config of its network (conf/official/dit.yaml).

The stored config is plain data, loaded with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ldae.cli import compose_config
from ldae.errors import ConfigError
from ldae.lit.pretrain import PretrainModule


def load_checkpoint_config(ckpt_path: str) -> tuple[dict, dict]:
    """(the checkpoint, its stored run config as plain data) of a checkpoint written by ldae-train."""
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist; give a checkpoint written by ldae-train "
                          f"(RUN_DIR/checkpoints/last.ckpt)")
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, random bytes, text, a pickle of foreign objects
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(f"ckpt_path={ckpt_path} cannot be read as a checkpoint ({type(e).__name__}: "
                          f"{first[:160]}); give a checkpoint written by ldae-train (RUN_DIR/checkpoints/last.ckpt)")
    if not isinstance(ckpt, dict):
        raise ConfigError(f"ckpt_path={ckpt_path} holds a {type(ckpt).__name__}, not a checkpoint: was it written "
                          f"by ldae-train?")
    config = (ckpt.get("hyper_parameters") or {}).get("config")
    if config is None:
        hint = (" It is an official DiT checkpoint: add official=dit official.vae_path=/path/sd-vae and probe_data=..."
                if official_state_dict(ckpt) is not None else "")
        raise ConfigError(f"ckpt_path={ckpt_path} holds no ldae config: was it written by ldae-train?{hint}")
    return ckpt, config


def official_state_dict(ckpt: dict) -> dict | None:
    """The DiT weights of an official checkpoint: the file itself (DiT's released EMA weights) or a DiT
    training checkpoint's "ema" entry; None when `ckpt` is neither."""
    for sd in (ckpt.get("ema"), ckpt):
        if isinstance(sd, dict) and "x_embedder.proj.weight" in sd and "y_embedder.embedding_table.weight" in sd:
            return sd
    return None


def load_official_checkpoint(ckpt_path: str) -> dict:
    """An official DiT checkpoint file (a state dict, or a DiT training checkpoint with its "ema" entry)."""
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist; give an official DiT checkpoint file")
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"ckpt_path={ckpt_path} cannot be read ({type(e).__name__}); give an official DiT "
                          f"checkpoint (a state dict)") from None
    if not isinstance(ckpt, dict) or official_state_dict(ckpt) is None:
        raise ConfigError(f"ckpt_path={ckpt_path} is not an official DiT checkpoint (no x_embedder / y_embedder "
                          f"weights); without official=dit it is read as an ldae checkpoint")
    return ckpt


def official_run_config(cfg: DictConfig) -> DictConfig:
    """The ldae run config of the network an official DiT checkpoint holds (conf/official/dit.yaml): the preset's
    train overrides, its SD-VAE folder as the tokenizer's public weights, and the probe of this command."""
    off = cfg.official
    if cfg.get("probe_data") is None:
        raise ConfigError("official=dit needs probe_data=NAME (e.g. probe_data=imagefolder probe_data.root=/imagenet): "
                          "an official checkpoint carries no data")
    overrides = [*off.run, *off.extra_run, f"tokenizer.pretrained_path={off.vae_path}"]
    try:
        run_cfg = compose_config(overrides)
    except Exception as e:  # a bad official.extra_run entry
        raise ConfigError(f"official.run/extra_run do not compose ({str(e).strip().splitlines()[0][:200]})") from None
    OmegaConf.set_struct(run_cfg, False)
    run_cfg.probe = cfg.probe
    run_cfg.probe.t_offset = int(off.t_offset)
    run_cfg.probe_data = cfg.probe_data
    return run_cfg


def load_official(module, ckpt: dict, latent_scale: float) -> None:
    """Official weights into `module`: the DiT (strict: every name and shape, also into the EMA copy the probe
    reads), the SD-VAE from its folder, and DiT's fixed latent factor instead of a measured one."""
    sd = official_state_dict(ckpt)
    try:
        module.backbone.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ConfigError(f"the official checkpoint does not match official.run's network "
                          f"({str(e).strip().splitlines()[1 if len(str(e).splitlines()) > 1 else 0].strip()[:200]}); "
                          f"set the network with official.extra_run=['model.name=DiT-B/2',...]") from None
    if module.ema is not None:
        module.ema.module.load_state_dict(sd, strict=True)
    tok = module.tokenizer
    tok.prepare()  # the public VAE weights
    tok.norm.shift.zero_()
    tok.norm.scale.fill_(float(latent_scale))
    tok.fitted.fill_(True)


# Probe keys added after some checkpoints were written, with the values that reproduce what those runs did
# (their base_lr was used as given, their augmentation cropped at scale 0.2).
PROBE_KEYS_ADDED = {"name": "linear", "pool": "avg", "lr_source": "custom",
                    "lr_presets": {"mae": 0.1, "paper_printed": 1.0e-4}, "disk_cache": True, "crop_min_scale": 0.2,
                    "t_offset": 0}


def upgrade_stored_config(stored: dict) -> dict:
    """A checkpoint's config with the probe keys it predates filled in (old checkpoints stay evaluable)."""
    probe = stored.get("probe")
    if isinstance(probe, dict):
        stored = {**stored, "probe": {**PROBE_KEYS_ADDED, **probe}}
    target = stored.get("target")
    if isinstance(target, dict):  # target.output_basis came later; before it every output was in pixels
        stored = {**stored, "target": {"output_basis": "pixels", **target}}
    return {"online_probe": {"enabled": False, "t": 10, "lr": 1.0e-3}, "probe_data": None, **stored}


def module_from_checkpoint(ckpt_path: str):
    """(PretrainModule with the checkpoint's weights, its stored run config upgraded to today's keys)."""
    ckpt, stored = load_checkpoint_config(ckpt_path)
    cfg = OmegaConf.create(upgrade_stored_config(stored))
    module = PretrainModule.from_config(cfg)
    module.load_state_dict(ckpt["state_dict"])
    return module, cfg
