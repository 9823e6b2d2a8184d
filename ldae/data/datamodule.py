"""The Lightning datamodule: global batch -> per-device batch and gradient accumulation."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ldae.data.datasets import build_dataset


def split_batch(global_batch: int, world_size: int, device_cap: int | None) -> tuple[int, int]:
    """Global batch -> (per-device batch, accumulation steps) with per_device * accum * world = global."""
    if global_batch % world_size:
        raise ValueError(f"data.batch_size={global_batch} is not divisible by the world size {world_size}")
    per_rank = global_batch // world_size
    accum = 1
    if device_cap:
        while per_rank // accum > device_cap or per_rank % accum:
            accum += 1
    return per_rank // accum, accum


class LDAEDataModule(pl.LightningDataModule):
    def __init__(self, cfg, world_size: int = 1):
        super().__init__()
        self.cfg = cfg
        self.device_batch, self.accumulate = split_batch(cfg.batch_size, world_size, cfg.device_batch_size)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.latent_train_set: Dataset | None = None  # set when pretraining reads a latent cache

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = build_dataset(self.cfg, "train")
            self.val_set = build_dataset(self.cfg, "val", augment=False)

    def _loader(self, ds: Dataset, shuffle: bool, drop_last: bool, batch_size: int | None = None) -> DataLoader:
        g = torch.Generator().manual_seed(int(self.cfg.seed))
        workers = int(self.cfg.num_workers)
        return DataLoader(ds, batch_size=batch_size or self.device_batch, shuffle=shuffle, drop_last=drop_last,
                          num_workers=workers, persistent_workers=workers > 0, generator=g,
                          pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        ds = self.latent_train_set if self.latent_train_set is not None else self.train_set
        return self._loader(ds, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False, drop_last=False)
