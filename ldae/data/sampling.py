"""A resumable training order: the batches of an epoch are a function of (seed, epoch), and the loader
remembers how many of them the training steps have consumed, so a run killed mid-epoch and resumed sees
exactly the batches the uninterrupted run saw (DESIGN.md section 2, the randomness rule).

Lightning saves `ResumableLoader.state_dict()` in every checkpoint (it checks for the `state_dict` /
`load_state_dict` pair) and hands it back on resume; `ConsumedBatches` counts the steps that finished.
"""

from __future__ import annotations

from typing import Iterator

import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader, Sampler, Subset


class EpochBatchSampler(Sampler[list[int]]):
    """Per-rank batches of a permutation keyed on (seed, epoch); every rank gets the same number of batches.

    The permutation is drawn once for all ranks and rank r takes every world-th index of it, so one process
    and eight see the same global order. `skip` batches at the start of the epoch are left out (resume).
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = True,
                 rank: int = 0, world_size: int = 1):
        self.n, self.batch, self.seed = int(num_samples), int(batch_size), int(seed)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.rank, self.world = int(rank), int(world_size)
        self.epoch = 0
        self.skip = 0  # batches of `self.epoch` already consumed before a resume
        # Lightning calls set_epoch on `loader.batch_sampler.sampler`: point that at ourselves.
        self.sampler = self

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before every epoch
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = int(epoch)

    def _per_rank(self) -> int:
        return self.n // self.world if self.drop_last else -(-self.n // self.world)

    def __len__(self) -> int:  # the full epoch, also when resuming mid-way (Lightning counts from its progress)
        m = self._per_rank()
        return m // self.batch if self.drop_last else -(-m // self.batch)

    def order(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch, before batching."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            perm = torch.randperm(self.n, generator=g)
        else:
            perm = torch.arange(self.n)
        m = self._per_rank()
        if not self.drop_last and m * self.world > self.n:  # pad by wrapping so ranks stay in step
            perm = torch.cat([perm, perm[: m * self.world - self.n]])
        return perm[self.rank: m * self.world: self.world]

    def __iter__(self) -> Iterator[list[int]]:
        idx = self.order().tolist()
        for b in range(self.skip, len(self)):
            yield idx[b * self.batch: (b + 1) * self.batch]


class ResumableLoader(DataLoader):
    """A DataLoader over an `EpochBatchSampler` whose position survives a checkpoint."""

    def __init__(self, dataset, sampler: EpochBatchSampler, **kwargs):
        super().__init__(dataset, batch_sampler=sampler, **kwargs)
        self.consumed = 0  # batches of the current epoch whose training step finished

    def state_dict(self) -> dict:
        return {"epoch": self.batch_sampler.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.epoch = int(state["epoch"])
        self.batch_sampler.skip = int(state["consumed"]) if state["consumed"] < len(self.batch_sampler) else 0
        self.consumed = self.batch_sampler.skip


class ConsumedBatches(Callback):
    """Counts finished training batches on the train loader (before LastCheckpoint saves: Lightning runs
    checkpoint callbacks last), and resets the count at each epoch start."""

    @staticmethod
    def _loader(trainer):
        dl = trainer.train_dataloader
        return dl if isinstance(dl, ResumableLoader) else None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        dl = self._loader(trainer)
        if dl is not None and dl.batch_sampler.skip == 0:
            dl.consumed = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        dl = self._loader(trainer)
        if dl is not None:
            dl.consumed += 1


def random_subset(dataset, n: int | None, seed: int):
    """A seeded random sample of n items of `dataset` (in index order, for locality), or all of it when n is
    null or not smaller. Every sample that stands for a dataset (a tokenizer's fit images, a PSNR or probe
    subset) is drawn this way, never as a prefix: image folders and sorted tensors list class by class."""
    if not n or n >= len(dataset):
        return dataset
    g = torch.Generator().manual_seed(int(seed))
    keep = torch.randperm(len(dataset), generator=g)[: int(n)].sort().values
    return Subset(dataset, keep.tolist())


def subset_identity(dataset) -> str:
    """What a cache key needs to know of a (possibly sub-sampled) dataset: a digest of its indices, or "all"."""
    if not isinstance(dataset, Subset):
        return "all"
    import hashlib

    return hashlib.sha1(torch.as_tensor(dataset.indices, dtype=torch.int64).numpy().tobytes()).hexdigest()[:16]
