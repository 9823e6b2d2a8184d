"""Checkpoints that survive crashes: atomic writes, clean keys, RNG states, and a fault-injection hook for tests."""

from __future__ import annotations

import os
import random
import signal
from typing import Any

import numpy as np
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, Checkpoint

from ldae import signals
from ldae.utils.io import atomic_torch_save

WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DDP/DataParallel wrappers


def clean_key(key: str) -> str:
    """`_orig_mod.` anywhere and a leading `module.` go; `ema.module.` (timm's EMA copy) stays."""
    key = key.replace("_orig_mod.", "")
    return key[len("module."):] if key.startswith("module.") else key


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch.save IO, written to a temporary file and renamed, with wrapper prefixes removed:
    a kill during a save leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}")
        if "state_dict" in checkpoint:
            checkpoint = {**checkpoint, "state_dict": {clean_key(k): v for k, v in checkpoint["state_dict"].items()}}
        atomic_torch_save(path, checkpoint)


class LastCheckpoint(Checkpoint):
    """One writer of `dirpath/last.ckpt`: at every training-epoch end (after its validation) and every
    `every_n_steps` optimiser steps. (Lightning 2.6's ModelCheckpoint with save_top_k=0 writes last.ckpt only
    when it has also saved a top-k file, so epoch ends wrote nothing; and two of them version the second file
    to last-v1.ckpt.) A `Checkpoint` subclass: Lightning runs it after the other callbacks, so the loader
    position counted by `ConsumedBatches` is in the file."""

    def __init__(self, dirpath, every_n_steps: int | None = None):
        self.path = os.path.join(str(dirpath), "last.ckpt")
        self.previous = os.path.join(str(dirpath), "previous.ckpt")
        self.every_n_steps = every_n_steps
        self._saved_step = -1

    def _save(self, trainer, epoch_end: bool = False) -> None:
        if trainer.sanity_checking or trainer.global_step == 0:
            return
        same_step = trainer.global_step == self._saved_step
        if same_step and not epoch_end:
            return
        # The epoch end saves again after a step save of the same step: only then does the file hold the
        # epoch's validation and mean loss (and a resume skips the finished epoch's end). A re-save of the
        # same step replaces last.ckpt without rotating it, so previous.ckpt stays one step older.
        if trainer.is_global_zero and os.path.isfile(self.path) and not same_step:
            keep_previous(self.path, self.previous)
        trainer.save_checkpoint(self.path, weights_only=False)  # every rank calls it; rank zero writes
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # On SIGTERM/SIGINT Lightning stops right after this hook: the step just taken is saved first. (One
        # process only: under DDP the other ranks may not have the flag yet, and a save is a collective;
        # Lightning then stops every rank at the next step start, and the last periodic save is the resume.)
        stopping = trainer.received_sigterm and trainer.world_size == 1
        if (self.every_n_steps and trainer.global_step % self.every_n_steps == 0) or stopping:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer, epoch_end=True)


def keep_previous(last: str, previous: str) -> None:
    """`last` becomes `previous` as well, so that a newest checkpoint that cannot be read has one to fall back
    to. A hard link keeps `last` in place throughout (the atomic save then replaces it); a rename where the
    file system has no links (resume also looks for `previous`)."""
    tmp = previous + ".tmp"
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.link(last, tmp)
        os.replace(tmp, previous)
    except OSError:
        os.replace(last, previous)


def rng_states() -> dict:
    """Every RNG a training step may touch, as plain data (loads with weights_only=True)."""
    kind, keys, pos, gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(x):
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


class KillAtStep(Callback):
    """Fault injection for the resume tests: send this process a signal (SIGKILL, or the one named by
    LDAE_KILL_SIGNAL, e.g. TERM or INT) when training step `step` starts (the checkpoint of the step before is
    on disk by then). Enabled by the LDAE_KILL_AT_STEP environment variable."""

    ENV = "LDAE_KILL_AT_STEP"

    def __init__(self, step: int, signum: int = signal.SIGKILL):
        self.step = int(step)
        self.signum = signum

    @classmethod
    def from_env(cls) -> "KillAtStep | None":
        v = os.environ.get(cls.ENV)
        name = os.environ.get("LDAE_KILL_SIGNAL", "KILL")
        return cls(int(v), getattr(signal, "SIG" + name.upper().removeprefix("SIG"))) if v else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class StopAtStepEnd(Callback):
    """Marks the pretraining fit as the place where a signal stops at the next step end instead of at once
    (ldae.signals stays Lightning-free, so a bad command line fails before Lightning is imported)."""

    def on_fit_start(self, trainer, pl_module) -> None:
        signals.watch(trainer)

    def on_fit_end(self, trainer, pl_module) -> None:
        signals.unwatch()

    def on_exception(self, trainer, pl_module, exception) -> None:
        signals.unwatch()
