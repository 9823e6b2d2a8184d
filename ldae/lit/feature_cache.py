"""Fast probing: extracted features cached on disk, once per (weights, t, block, clean/noisy, data split).

With training augmentation off, every probe epoch would see the same features, so they are computed once
and kept under `$LDAE_CACHE/features/KEY.pt`. KEY hashes what the features depend on: the extractor's weights
(a digest of its state dict, so a re-saved checkpoint with the same weights hits and a different step misses),
the probe settings (t, block, noise, input) and the data (dataset fingerprint, split, size). Writes are atomic,
so two processes that extract the same features at once leave one whole file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from ldae.utils.io import atomic_torch_save, load_problem, move_aside

log = logging.getLogger("ldae")


def weights_digest(*modules: nn.Module) -> str:
    """SHA-1 of the modules' state dicts (names, dtypes, shapes and values)."""
    h = hashlib.sha1()
    for m in modules:
        for name, t in sorted(m.state_dict().items()):
            if not isinstance(t, torch.Tensor):
                continue
            t = t.detach().cpu().contiguous().reshape(-1)  # 0-d tensors too
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def feature_cache_dir(cfg) -> Path:
    """$LDAE_CACHE/features (the environment of this process wins over the path stored in a checkpoint's config)."""
    root = os.environ.get("LDAE_CACHE") or cfg.paths.cache_dir
    return Path(root) / "features"


def feature_key(identity: dict, data: dict, split: str, n: int) -> str:
    blob = json.dumps({"features": identity, "data": data, "split": split, "n": n}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def cached_features(extractor: nn.Module, loader: DataLoader, key: str, cache_dir: Path | None,
                    device: torch.device | str = "cpu", desc: str = "features") -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(features (N, D), labels (N,), info): read from `cache_dir/KEY.pt` or extracted and written there."""
    from ldae.lit.probe import extract_features

    path = cache_dir / f"{key}.pt" if cache_dir is not None else None
    t0 = time.perf_counter()
    if path is not None and path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            feats, labels = blob["features"], blob["labels"]
            if not (isinstance(feats, torch.Tensor) and isinstance(labels, torch.Tensor)
                    and feats.ndim == 2 and labels.ndim == 1 and len(feats) == len(labels)):
                raise ValueError("not a (N, D) feature tensor with N labels")
        except FileNotFoundError:
            feats = None  # another process moved it aside meanwhile
        except Exception as e:  # truncated or otherwise corrupt: it heals (moved aside, extracted again)
            feats = None
            move_aside(path, load_problem(e), log, what="feature cache file")
        if feats is not None:
            log.info("%s: %d cached features from %s", desc, labels.numel(), path)
            return feats, labels, {"hit": True, "path": str(path), "wall_s": time.perf_counter() - t0}
    feats, labels = extract_features(extractor, loader, device, desc)
    if path is not None:
        atomic_torch_save(path, {"features": feats, "labels": labels})
    return feats, labels, {"hit": False, "path": str(path) if path else None, "wall_s": time.perf_counter() - t0}
