"""Tokenizers behind one interface, and the cache that makes a fitted tokenizer an artifact."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ldae.choices import TOKENIZERS, builder, check
from ldae.distributed import env_rank
from ldae.plan import resolve_latent_dim
from ldae.tokenizers.base import Tokenizer
from ldae.tokenizers.identity import Pixels
from ldae.tokenizers.linear import PatchAE, PatchVAE
from ldae.tokenizers.pca import PatchPCA
from ldae.tokenizers.trainable import TrainableTokenizer
from ldae.tokenizers.vqgan import ConvVAE
from ldae.utils.io import atomic_torch_save, load_problem, move_aside, wait_for_file

log = logging.getLogger(__name__)

# How a trained tokenizer's node (conf/tokenizer/patch_ae.yaml, vqgan.yaml) maps onto its constructor: every key
# is required, and tests/test_constructors.py checks that the shipped nodes hold exactly these and STAGE_KEYS.
TRAIN_KEYS = {"train_steps": "steps", "lr": "lr", "betas": "betas", "disc_lr": "disc_lr",
              "weight_decay": "weight_decay", "seed": "seed", "accelerator": "accelerator",
              "precision": "precision"}  # node key -> key of the `train` dict (ldae.lit.tokenizer reads it)
LOSS_KEYS = {"recon_loss": "recon", "kl_weight": "kl_weight", "perceptual": "perceptual",
             "adversarial": "adversarial"}  # node key -> AutoencoderLoss argument
CONV_VAE_KEYS = ("dit_patch", "block_channels", "layers_per_block", "norm_groups", "mid_attention", "pretrained_path")
# Keys of a tokenizer node that the stages and the run plan read, not its constructor (ldae.stages, ldae.plan);
# the constructor's latent_dim is the plan's effective d, worked out from latent_dim and latent_units.
STAGE_KEYS = ("name", "latent_dim", "latent_units", "fit_images", "cache", "latent_cache", "train_batch_size", "seed")


def build_tokenizer(cfg) -> Tokenizer:
    """cfg: the `tokenizer` config node; one with `_target_` is a user's tokenizer (ldae.plugins)."""
    from ldae import plugins

    if plugins.is_plugin(cfg):
        return build_plugin_tokenizer(cfg)
    check("tokenizer", cfg.name, TOKENIZERS)
    return builder(TOKENIZERS, cfg.name)(cfg)


def build_patch_pca(cfg) -> PatchPCA:
    return PatchPCA(patch_size=cfg.patch_size, latent_dim=resolve_latent_dim(cfg), center=cfg.center,
                    scaling=cfg.scaling, num_patches=cfg.num_patches, seed=cfg.seed)


def build_pixels(cfg) -> Pixels:
    return Pixels(patch_size=cfg.patch_size)


def _trained_args(cfg) -> tuple[dict, dict]:
    """(the node as plain data, the arguments every gradient-trained tokenizer takes from it)."""
    from omegaconf import OmegaConf

    spec = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    common = dict(train={k: spec[key] for key, k in TRAIN_KEYS.items()},
                  loss={k: spec[key] for key, k in LOSS_KEYS.items()}, normalize=spec["normalize"],
                  posterior=spec["posterior"], norm_batches=spec["norm_batches"], spec=spec)
    return spec, common


def build_patch_ae(cfg) -> PatchAE:
    return PatchAE(cfg.patch_size, resolve_latent_dim(cfg), **_trained_args(cfg)[1])


def build_patch_vae(cfg) -> PatchVAE:
    return PatchVAE(cfg.patch_size, resolve_latent_dim(cfg), **_trained_args(cfg)[1])


def build_conv_vae(cfg) -> ConvVAE:
    spec, common = _trained_args(cfg)
    return ConvVAE(cfg.patch_size, resolve_latent_dim(cfg), **{k: spec[k] for k in CONV_VAE_KEYS}, **common)


def build_plugin_tokenizer(cfg) -> Tokenizer:
    """A user's tokenizer: ldae passes patch_size, latent_dim (the effective d) and seed where it takes them;
    one that is not an ldae Tokenizer is wrapped (PluginTokenizer). Its target and own arguments key it."""
    from ldae import plugins
    from ldae.tokenizers.plugin import PluginTokenizer

    ldae_args = {"patch_size": int(cfg.patch_size), "seed": cfg.get("seed")}
    if cfg.get("latent_dim") is not None:
        ldae_args["latent_dim"] = resolve_latent_dim(cfg)
    obj = plugins.instantiate(cfg, "tokenizer", ldae_args)
    ident = plugins.identity(cfg, "tokenizer")
    if isinstance(obj, Tokenizer):
        obj.name, obj.plugin = str(cfg.name), ident
        return obj
    return PluginTokenizer(obj, str(cfg.name), int(cfg.patch_size), ident)


def _wait_for(path: Path, timeout_s: float, poll_s: float = 2.0) -> float:
    return wait_for_file(path, timeout_s, poll_s, what=f"rank 0's tokenizer artifact {path}")


def artifact_key(tokenizer: Tokenizer, data_fingerprint: dict) -> str:
    """A fitted tokenizer is keyed by its own config and by the data it was fitted on."""
    fp = tokenizer.fingerprint()
    plugin = getattr(tokenizer, "plugin", None)  # a user's tokenizer: its target and arguments (ldae.plugins)
    if plugin is not None:
        fp = {**fp, "plugin": plugin}
    blob = json.dumps({"tokenizer": fp, "data": data_fingerprint}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fit_or_load(tokenizer: Tokenizer, batches: Callable[[], Iterable[torch.Tensor]], data_fingerprint: dict,
                cache_dir: str | None, fit: Callable[[Tokenizer, Iterable], dict] | None = None,
                timeout_s: float = 7 * 24 * 3600, rank: int | None = None) -> dict:
    """Fit `tokenizer` on `batches()`, or load the artifact a previous run left in `cache_dir`.

    fit(tokenizer, batches) -> stats does the fitting: `tokenizer.fit` when None. A gradient-trained tokenizer
    needs a trainer, which its stage passes (ldae.stages.fit_tokenizer), so this layer never imports one.

    Returns a small record (key, path, whether it was cached, fit statistics) for results.json.
    """
    if not tokenizer.needs_fit:
        return {"name": tokenizer.name, "fitted": False}
    key = artifact_key(tokenizer, data_fingerprint)
    path = Path(cache_dir) / "tokenizers" / f"{tokenizer.name}-{key}.pt" if cache_dir else None
    rank = env_rank() if rank is None else rank
    if path is not None and path.exists():
        blob, why = _load_artifact(tokenizer, path)
        if blob is not None:
            log.info("tokenizer %s loaded from cache %s", tokenizer.name, path)
            return {"name": tokenizer.name, "key": key, "path": str(path), "cached": True, **blob["stats"]}
        # A corrupt artifact heals: rank 0 moves it aside and refits; the other ranks wait for the new one.
        if rank == 0 and why is not None:
            move_aside(path, why, log, what="tokenizer artifact")
    if rank > 0 and path is not None:
        # Several processes (torchrun, SLURM): rank 0 fits, the others wait for its artifact and load it,
        # so every rank holds the same tokenizer and none trains a private copy.
        t0 = time.time()
        while True:
            _wait_for(path, max(1.0, timeout_s - (time.time() - t0)))
            blob, why = _load_artifact(tokenizer, path)
            if blob is not None:
                break
            if time.time() - t0 > timeout_s:  # rank 0 never replaced the corrupt file
                raise TimeoutError(f"waited {timeout_s:.0f} s for a loadable {path} ({why})")
            time.sleep(2.0)
        log.info("rank %d: tokenizer %s loaded from %s after %.0f s", rank, tokenizer.name, path, time.time() - t0)
        return {"name": tokenizer.name, "key": key, "path": str(path), "cached": True, **blob["stats"]}
    stats = fit(tokenizer, batches()) if fit is not None else tokenizer.fit(batches())
    if path is not None:
        atomic_torch_save(path, {"state_dict": tokenizer.state_dict(), "stats": stats,
                                 "fingerprint": tokenizer.fingerprint(), "data": data_fingerprint})
        log.info("tokenizer %s fitted and cached at %s", tokenizer.name, path)
    return {"name": tokenizer.name, "key": key, "path": str(path) if path else None, "cached": False, **stats}


def _load_artifact(tokenizer: Tokenizer, path: Path) -> tuple[dict | None, str | None]:
    """(blob, None) when `path` loads into `tokenizer`, else (None, why): the load test that finds a truncated
    or otherwise corrupt artifact instead of crashing every run that shares it."""
    initial = {k: v.clone() for k, v in tokenizer.state_dict().items()}
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        tokenizer.load_state_dict(blob["state_dict"])
        dict(blob["stats"])
        return blob, None
    except FileNotFoundError:  # rank 0 moved it aside meanwhile: nothing to load yet
        return None, None
    except Exception as e:  # truncated zip, random bytes, a state dict of another shape
        tokenizer.load_state_dict(initial)  # a half-applied load must not seed the refit
        return None, load_problem(e)


__all__ = ["Tokenizer", "PatchPCA", "Pixels", "PatchAE", "PatchVAE", "TrainableTokenizer", "build_tokenizer", "fit_or_load",
           "TOKENIZERS"]
