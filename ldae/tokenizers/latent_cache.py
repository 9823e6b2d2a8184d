"""Latent cache for a frozen tokenizer: encode the training set once, then pretraining reads latents.

Each image is stored as its posterior (raw mean and log-variance, before the latent normalisation) for
both horizontal flips, so pretraining still draws a fresh flip and a fresh posterior sample per epoch,
keyed on (seed, epoch, index) like the rest of the corruption (no frozen flip, no frozen sample).

Shards: shard k holds dataset indices [k*S, (k+1)*S). With W processes, rank r writes the shards
k ≡ r (mod W), each by an atomic rename under its own name, so ranks never write the same file and a
crash leaves whole shards only (a rerun skips them). Rank 0 writes `index.json` once every shard exists;
a reader waits for it. Only for latent-space objectives (target.input=latent, predict eps|x0): the image
itself is then never needed while pretraining.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ldae.data.batch import LatentBatch
from ldae.utils.io import atomic_torch_save, atomic_write_json, wait_for_file

log = logging.getLogger(__name__)


@torch.no_grad()
def build_latent_cache(tokenizer, dataset, out_dir: str | Path, rank: int = 0, world: int = 1,
                       shard_size: int = 4096, batch_size: int = 256, device: str | torch.device = "cpu",
                       timeout_s: float = 7 * 24 * 3600) -> Path:
    """Encode `dataset` ((x, y, index) items, un-augmented) with `tokenizer.posterior` into shards of `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "index.json").exists():
        return out
    n = len(dataset)
    shards = -(-n // shard_size)
    was = tokenizer.training
    tokenizer.eval().to(device)
    t0 = time.time()
    for k in range(rank, shards, world):
        path = out / f"shard-{k:05d}.pt"
        if path.exists():
            continue
        idx = range(k * shard_size, min((k + 1) * shard_size, n))
        means, logvars, labels = [], [], []
        for x, y, _ in DataLoader(Subset(dataset, idx), batch_size=batch_size, shuffle=False):
            x = x.to(device)
            pair = []
            for view in (x, x.flip(-1)):  # both horizontal flips
                m, lv = tokenizer.posterior(view)
                pair.append((m, lv if lv is not None else torch.full_like(m, -30.0)))
            means.append(torch.stack([p[0] for p in pair], 1).cpu())  # (B, 2, C, h, w)
            logvars.append(torch.stack([p[1] for p in pair], 1).cpu())
            labels.append(y)
        atomic_torch_save(path, {"start": idx.start, "mean": torch.cat(means), "logvar": torch.cat(logvars),
                                 "label": torch.cat(labels)})
    tokenizer.train(was)
    if rank == 0:
        for k in range(shards):
            _wait(out / f"shard-{k:05d}.pt", timeout_s)
        atomic_write_json(out / "index.json", {"num_images": n, "shards": shards, "shard_size": shard_size,
                                               "encode_s": time.time() - t0})
    else:
        _wait(out / "index.json", timeout_s)
    log.info("latent cache %s: %d images in %d shards", out, n, shards)
    return out


def _wait(path: Path, timeout_s: float, poll_s: float = 1.0) -> None:
    wait_for_file(path, timeout_s, poll_s, what=f"{path} (written by another rank)")


class LatentDataset(Dataset):
    """Items LatentBatch(mean, logvar, label, index): mean/logvar (2, C, h, w), the two flips of one image."""

    def __init__(self, cache_dir: str | Path):
        root = Path(cache_dir)
        info = json.loads((root / "index.json").read_text())
        blobs = [torch.load(root / f"shard-{k:05d}.pt", map_location="cpu", weights_only=True)
                 for k in range(info["shards"])]
        self.mean = torch.cat([b["mean"] for b in blobs])
        self.logvar = torch.cat([b["logvar"] for b in blobs])
        self.label = torch.cat([b["label"] for b in blobs])
        assert len(self.mean) == info["num_images"], f"{root}: {len(self.mean)} latents, index says {info['num_images']}"

    def __len__(self) -> int:
        return len(self.mean)

    def __getitem__(self, i: int):
        return LatentBatch(self.mean[i], self.logvar[i], self.label[i], i)
