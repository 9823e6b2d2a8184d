"""The Lightning datamodule: the plan's per-device batch and gradient accumulation (ldae.plan.pretrain_batches)."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
import torch
from torch.utils.data import DataLoader, Dataset

from ldae.data.datasets import build_dataset, warn_bad_images
from ldae.data.sampling import EpochBatchSampler, ResumableLoader
from ldae.plan import Batches


class LDAEDataModule(pl.LightningDataModule):
    """cfg: the `data` node; batches: the run plan's pretraining batches (ldae.plan.pretrain_batches)."""

    def __init__(self, cfg, batches: Batches, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.world_size, self.seed = batches.world_size, int(seed)
        self.device_batch, self.accumulate = batches.per_device, batches.accumulate
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.latent_train_set: Dataset | None = None  # set when pretraining reads a latent cache

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = build_dataset(self.cfg, "train")
            self.val_set = build_dataset(self.cfg, "val", augment=False)

    def _worker_kwargs(self) -> dict:
        workers = int(self.cfg.num_workers)
        return dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        """Resumable: the order is keyed on (seed, epoch) and the position is saved in checkpoints."""
        rank = self.trainer.global_rank if self.trainer is not None else 0
        ds = self.latent_train_set if self.latent_train_set is not None else self.train_set
        sampler = EpochBatchSampler(len(ds), self.device_batch, seed=self.seed, shuffle=True,
                                    drop_last=True, rank=rank, world_size=self.world_size)
        return ResumableLoader(ds, sampler, **self._worker_kwargs())

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.device_batch, shuffle=False, **self._worker_kwargs())


class BadImageReport(Callback):
    """One warning per epoch with the number of unreadable image files skipped (imagefolder)."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        dm = trainer.datamodule
        if dm is not None:
            warn_bad_images(dm.train_set, f"epoch {trainer.current_epoch} (train)")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        dm = trainer.datamodule
        if dm is not None and not trainer.sanity_checking:
            warn_bad_images(dm.val_set, f"epoch {trainer.current_epoch} (val)")
