"""Checkpoints read back for evaluation: the run config an ldae checkpoint stores, upgraded to today's keys,
and the network it holds; an official DiT checkpoint with the ldae config of its network (conf/official/dit.yaml).

The stored config is plain data, loaded with `torch.load(weights_only=True)`.
"""

from __future__ import annotations


import torch
from omegaconf import DictConfig, OmegaConf

from ldae.cli import compose_config
from ldae.errors import ConfigError
from ldae.lit.pretrain import PretrainModule
from ldae.utils.io import require_checkpoint_file


def load_checkpoint_config(ckpt_path: str) -> tuple[dict, dict]:
    """(the checkpoint, its stored run config as plain data, upgraded to today's keys) of a checkpoint written by
    ldae-train."""
    require_checkpoint_file(ckpt_path, "ldae")
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
    return ckpt, upgrade_stored_config(config)


def official_state_dict(ckpt: dict) -> dict | None:
    """The DiT weights of an official checkpoint: the file itself (DiT's released EMA weights) or a DiT
    training checkpoint's "ema" entry; None when `ckpt` is neither."""
    for sd in (ckpt.get("ema"), ckpt):
        if isinstance(sd, dict) and "x_embedder.proj.weight" in sd and "y_embedder.embedding_table.weight" in sd:
            return sd
    return None


def load_official_checkpoint(ckpt_path: str) -> dict:
    """An official DiT checkpoint file (a state dict, or a DiT training checkpoint with its "ema" entry)."""
    require_checkpoint_file(ckpt_path, "official")
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


# The one upgrade of a stored run config: keys that checkpoints written by older versions lack, each with the
# value that reproduces what those runs did (not today's YAML default). "node.key" is filled in only inside a node
# the checkpoint has; a top-level key whenever it is absent. A present key is never changed.
STORED_CONFIG_UPGRADES = {
    "probe.name": "linear",              # before the kNN and fine-tune protocols every probe was linear
    "probe.pool": "avg",                 # before the pooling choice features were average-pooled
    "probe.lr_source": "custom",         # before the lr presets probe.base_lr was used as given
    "probe.lr_presets": {"mae": 0.1, "paper_printed": 1.0e-4},  # the presets as added (unused with custom)
    "probe.disk_cache": True,            # features always went to the disk cache
    "probe.crop_min_scale": 0.2,         # their augmentation cropped at area 0.2 (today's recipes: 0.08)
    "probe.t_offset": 0,                 # before official DiT checkpoints the backbone read t itself
    "target.output_basis": "pixels",     # before the output basis every output was in pixels
    "online_probe": {"enabled": False, "t": 10, "lr": 1.0e-3},  # before the online probe: none ran
    "probe_data": None,                  # before probe_data the probe read the pretraining data
    "data.labels": True,                 # before unlabelled image folders every dataset had labels
    "data.crop_min_scale": 0.2,          # before it was a key the pretraining crop kept area >= 0.2 (the same value)
    "gen.guidance_channels": "all",      # before the DiT-style choice guidance covered every channel
    # before the speed switches the step ran as these settings do: no compile, TF32, SDPA attention, foreach EMA
    "speed": {"compile": False, "compile_mode": "default", "compile_backend": "inductor", "tf32": True,
              "fused_attention": True, "fused_adamw": "auto", "ema_foreach": True,
              "activation_checkpointing": False, "channels_last": False},
}
# The gradient-trained tokenizers' keys that came later, for a stored patch_ae / patch_vae / vqgan node only.
TRAINED_TOKENIZER_UPGRADES = {
    "weight_decay": 0.0, "disc_lr": None,  # AdamW without decay; the discriminator at the generator's lr
    "accelerator": "auto", "precision": "32-true",  # the tokenizer trainer's own device choice, full precision
    "kl_weight": 0.0,                    # patch_ae's node had none: an AE has no KL term
    "perceptual": {"weight": 0.0}, "adversarial": {"weight": 0.0},  # patch_ae/vae's nodes had none: no such terms
}


def upgrade_stored_config(stored: dict) -> dict:
    """A checkpoint's stored config with the keys it predates filled in (STORED_CONFIG_UPGRADES), so old
    checkpoints stay evaluable. Every reader of a stored config goes through it (load_checkpoint_config)."""
    out = dict(stored)
    for key, value in STORED_CONFIG_UPGRADES.items():
        node, _, leaf = key.rpartition(".")
        if not node:
            out.setdefault(key, value)
        elif isinstance(out.get(node), dict) and leaf not in out[node]:
            out[node] = {**out[node], leaf: value}
    tok = out.get("tokenizer")
    if isinstance(tok, dict) and tok.get("name") in ("patch_ae", "patch_vae", "vqgan"):
        out["tokenizer"] = {**TRAINED_TOKENIZER_UPGRADES, **tok}
    return out


def module_from_checkpoint(ckpt_path: str):
    """(PretrainModule with the checkpoint's weights, its stored run config upgraded to today's keys)."""
    ckpt, stored = load_checkpoint_config(ckpt_path)
    cfg = OmegaConf.create(stored)
    module = PretrainModule.from_config(cfg)
    module.load_state_dict(ckpt["state_dict"])
    return module, cfg
