"""Tokenizers behind one interface, and the cache that makes a fitted tokenizer an artifact."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ldae.tokenizers.base import PAPER_PATCH_DIM, Tokenizer, effective_latent_dim
from ldae.tokenizers.identity import Pixels
from ldae.tokenizers.pca import PatchPCA
from ldae.utils.io import atomic_torch_save

log = logging.getLogger(__name__)

from ldae.choices import TOKENIZERS


def resolve_latent_dim(cfg) -> int:
    """The per-token d this tokenizer uses: `latent_dim` in the paper's units unless latent_units=absolute."""
    D = 3 * cfg.patch_size**2
    if cfg.get("latent_units", "paper") == "absolute":
        return int(cfg.latent_dim)
    return effective_latent_dim(int(cfg.latent_dim), D)


def build_tokenizer(cfg) -> Tokenizer:
    """cfg: the `tokenizer` config node."""
    if cfg.name == "patch_pca":
        return PatchPCA(patch_size=cfg.patch_size, latent_dim=resolve_latent_dim(cfg), center=cfg.center,
                        scaling=cfg.scaling, num_patches=cfg.num_patches, seed=cfg.seed)
    if cfg.name == "none":
        return Pixels(patch_size=cfg.patch_size)
    raise ValueError(f"unknown tokenizer '{cfg.name}'; allowed: {', '.join(TOKENIZERS)}")


def artifact_key(tokenizer: Tokenizer, data_fingerprint: dict) -> str:
    """A fitted tokenizer is keyed by its own config and by the data it was fitted on."""
    blob = json.dumps({"tokenizer": tokenizer.fingerprint(), "data": data_fingerprint}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fit_or_load(tokenizer: Tokenizer, batches: Callable[[], Iterable[torch.Tensor]], data_fingerprint: dict,
                cache_dir: str | None) -> dict:
    """Fit `tokenizer` on `batches()`, or load the artifact a previous run left in `cache_dir`.

    Returns a small record (key, path, whether it was cached, fit statistics) for results.json.
    """
    if not tokenizer.needs_fit:
        return {"name": tokenizer.name, "fitted": False}
    key = artifact_key(tokenizer, data_fingerprint)
    path = Path(cache_dir) / "tokenizers" / f"{tokenizer.name}-{key}.pt" if cache_dir else None
    if path is not None and path.exists():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        tokenizer.load_state_dict(blob["state_dict"])
        log.info("tokenizer %s loaded from cache %s", tokenizer.name, path)
        return {"name": tokenizer.name, "key": key, "path": str(path), "cached": True, **blob["stats"]}
    stats = tokenizer.fit(batches())
    if path is not None:
        atomic_torch_save(path, {"state_dict": tokenizer.state_dict(), "stats": stats,
                                 "fingerprint": tokenizer.fingerprint(), "data": data_fingerprint})
        log.info("tokenizer %s fitted and cached at %s", tokenizer.name, path)
    return {"name": tokenizer.name, "key": key, "path": str(path) if path else None, "cached": False, **stats}


__all__ = ["Tokenizer", "PatchPCA", "Pixels", "build_tokenizer", "fit_or_load", "effective_latent_dim",
           "resolve_latent_dim", "PAPER_PATCH_DIM", "TOKENIZERS"]
