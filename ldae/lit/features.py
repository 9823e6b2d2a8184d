"""Features of frozen networks for the probes: the extractors (encoder, block grid, raw pixels) and their disk cache.

Extractors: the global-average-pooled encoder output for clean input conditioned on t = 10 (App. A); a
class-conditional backbone gets the null class, never the label.

The cache, once per (weights, t, block, clean/noisy, data split): with training augmentation off, every
probe epoch would see the same features, so they are computed once and kept under
`$LDAE_CACHE/features/KEY.pt`. KEY hashes what the features depend on: the extractor's weights (a digest of its
state dict, so a re-saved checkpoint with the same weights hits and a different step misses), the probe
settings (t, block, noise, input) and the data (dataset fingerprint, split, size). Writes are atomic,
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
from tqdm.auto import tqdm

from ldae import rules
from ldae.choices import CLEAN_INPUTS, check, check_pool
from ldae.ops.noise import STREAM_EPS, keyed_normal, sample_keys
from ldae.utils.io import atomic_torch_save, load_problem, move_aside

log = logging.getLogger("ldae")


def clean_network_input(x: torch.Tensor, tokenizer, objective, clean_input: str = "projected") -> torch.Tensor:
    """The noise-free network input of images x: the latent, the projected image, or the image itself."""
    if objective.input == "latent":
        return tokenizer.encode(x)
    return x if clean_input == "original" else tokenizer.decode(tokenizer.encode(x))


class EncoderFeatures(nn.Module):
    """Image batch -> (B, width) features of a frozen DiT encoder, as the probe config asks."""

    def __init__(self, backbone, tokenizer, objective, schedule, t: int = 10, noisy: bool = False,
                 clean_input: str = "projected", block: int | None = None, seed: int = 0, pool: str = "avg",
                 t_offset: int = 0):
        super().__init__()
        check_pool(pool)
        check("probe.clean_input", clean_input, CLEAN_INPUTS)
        rules.check_probe_step(t, t_offset, schedule.num_steps)
        self.backbone, self.tokenizer, self.objective, self.schedule = backbone, tokenizer, objective, schedule
        self.t, self.noisy, self.clean_input, self.block, self.seed = t, noisy, clean_input, block, seed
        # Added to t for the backbone only, as the sampler's gen.t_offset: -1 for official DiT checkpoints,
        # conditioned on DDPM's step k = t - 1 while the noise of level t is what t means here.
        self.pool, self.t_offset = pool, int(t_offset)
        self.requires_grad_(False)

    @property
    def dim(self) -> int:
        return self.backbone.hidden_size

    def identity(self) -> dict:
        """What the features depend on besides the images: the weights and the probe settings (cache key)."""
        return {"kind": "encoder", "weights": weights_digest(self.backbone, self.tokenizer), "t": self.t,
                "noisy": self.noisy, "seed": self.seed if self.noisy else None, "clean_input": self.clean_input,
                "block": self.block, "pool": self.pool, "input": self.objective.input,
                **({"t_offset": self.t_offset} if self.t_offset else {})}  # old cache keys stay valid

    def network_input(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        if not self.noisy:
            return clean_network_input(x, self.tokenizer, self.objective, self.clean_input)
        z0 = self.tokenizer.encode(x)
        idx = index if index is not None else torch.arange(x.shape[0], device=x.device)
        eps = keyed_normal(sample_keys(self.seed, 0, idx), tuple(z0.shape[1:]), STREAM_EPS, z0.dtype)
        t = torch.full((x.shape[0],), self.t, device=x.device, dtype=torch.long)
        return self.objective.network_input(self.schedule.corrupt(z0, eps, t), self.tokenizer)

    @torch.no_grad()
    def timesteps(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) the backbone's conditioning step: probe.t plus the checkpoint's t_offset."""
        return torch.full((x.shape[0],), self.t + self.t_offset, device=x.device, dtype=torch.long)

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        self.backbone.eval()
        return self.backbone.forward_features(self.network_input(x, index), self.timesteps(x), None, self.block)


class GridFeatures(nn.Module):
    """An EncoderFeatures read after each of `blocks` in one forward: (B, K*D), block k in columns k*D:(k+1)*D."""

    def __init__(self, encoder: EncoderFeatures, blocks: list[int]):
        super().__init__()
        if not hasattr(encoder.backbone, "block_features"):  # one forward reads every block: DiT's method
            raise ValueError(f"the probe grid reads block_features(x, t, y, depths) of ldae's DiT; "
                             f"{type(encoder.backbone).__name__} has none")
        depth = len(encoder.backbone.blocks)
        bad = [b for b in blocks if not 1 <= b <= depth]
        if bad:
            raise ValueError(f"probe grid blocks {bad} outside 1..{depth} (the backbone's depth)")
        self.encoder, self.blocks = encoder, sorted(set(blocks))
        self.width = encoder.dim
        self.dim = self.width * len(self.blocks)

    def identity(self) -> dict:
        return {**self.encoder.identity(), "block": None, "blocks": self.blocks}

    @torch.no_grad()
    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        enc = self.encoder
        enc.backbone.eval()
        return enc.backbone.block_features(enc.network_input(x, index), enc.timesteps(x), None,
                                           self.blocks).flatten(1)  # (B, K*D)


class PixelFeatures(nn.Module):
    """The raw-pixel baseline: the image itself, flattened."""

    def __init__(self, image_size: int):
        super().__init__()
        self.dim = 3 * image_size * image_size

    def identity(self) -> dict:
        return {"kind": "pixels"}

    @torch.no_grad()
    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return x.flatten(1)


@torch.no_grad()
def extract_features(extractor: nn.Module, loader: DataLoader, device: torch.device | str = "cpu",
                     desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """Run `extractor` over a loader of (x, y, index): features (N, D) and labels (N,) on the CPU."""
    extractor.to(device)
    feats, labels = [], []
    for x, y, idx in tqdm(loader, desc=desc, leave=False):
        feats.append(extractor(x.to(device), idx.to(device)).float().cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


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
