"""Where the stages' work runs: the device outside Lightning's loops, the accelerator and devices of the side
Trainers (probe, fine-tuning), and the loggers of each stage (CSV, plus wandb with logger=wandb)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ldae.plan import accelerator_of, device_of, world_size_of
from ldae.distributed import trainer_kwargs
from ldae.lit.csv_metrics import AppendingCSVLogger as CSVLogger  # a resumed run keeps its curves
from ldae.wandb_logger import make_wandb_logger


def stage_accelerator(cfg: DictConfig) -> str:
    """The accelerator of the stages' own Trainers (probe, fine-tuning): the run's, or the CPU without a GPU."""
    return accelerator_of(cfg.trainer.accelerator)


def stage_device(cfg: DictConfig) -> str:
    """Where the work outside Lightning's loops runs (latent cache, probe features): the GPU the trainer asks for."""
    return device_of(cfg.trainer.get("accelerator", "auto"))


def loggers_for(cfg: DictConfig, out: Path, stage: str) -> list:
    """The loggers of one stage: its CSV folder `out/csv/STAGE`, and with logger=wandb its wandb run."""
    loggers = [CSVLogger(str(out), name="csv", version=stage)]
    if cfg.logger.wandb:
        wl = make_wandb_logger(cfg, out, stage)
        if wl is not None:
            loggers.append(wl)
    return loggers


def probe_devices(cfg: DictConfig) -> dict:
    """The probe trains on the pretraining's devices. Under DDP every rank trains the head on its shard of
    the (seeded DistributedSampler) batches with SyncBatchNorm, so the BatchNorm statistics are those of
    the global batch; a rank-0-only probe would leave N-1 GPUs idle for the 90-epoch paper protocol.
    (torch's SyncBatchNorm is GPU-only: a CPU DDP probe normalises with each rank's own batch.)"""
    accel = stage_accelerator(cfg)
    if world_size_of(cfg.trainer) == 1:
        return {"accelerator": accel, "devices": 1}
    kw = trainer_kwargs(cfg.trainer, None)  # the ranks exist already (pretraining started them)
    return {"accelerator": accel, "devices": kw["devices"], "num_nodes": kw["num_nodes"],
            "strategy": kw["strategy"], "sync_batchnorm": accel != "cpu"}
