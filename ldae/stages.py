"""The stages of a run before its evaluation: fit the tokenizer (and measure it), pretrain. Used by ldae-train;
the probe that follows is ldae.evaluation."""

from __future__ import annotations

import functools
import logging
import math
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor
from torch.utils.data import DataLoader

from ldae.plan import resolve
from ldae.distributed import global_rank, is_rank_zero, launched_world_size, trainer_kwargs
from ldae.data import LDAEDataModule, build_dataset, data_fingerprint
from ldae.data.datamodule import BadImageReport
from ldae.data.sampling import ConsumedBatches, random_subset
from ldae.generation import generation_stage
from ldae.lit.csv_metrics import AppendingCSVLogger as CSVLogger  # a resumed run keeps its curves
from ldae.lit.checkpointing import AtomicCheckpointIO, KillAtStep, LastCheckpoint, StopAtStepEnd
from ldae.lit.online_probe import OnlineProbe
from ldae.lit.tokenizer import fit_trainable
from ldae.pictures import DenoisingPanels, panel_images, tokenizer_pictures
from ldae.runtime import loggers_for, stage_device
from ldae.lit.pretrain import PretrainModule
from ldae.tokenizers import Tokenizer, TrainableTokenizer, build_tokenizer, fit_or_load
from ldae.tokenizers.base import ImageBatches
from ldae.tokenizers.latent_cache import LatentDataset, build_latent_cache
from ldae.wandb_logger import log_pictures, make_wandb_logger, set_summary


log = logging.getLogger("ldae")

# Lightning's advice lines that do not apply to in-memory data on CPU.
for pattern in (".*does not have many workers.*", ".*GPU available but not used.*", ".*LeafSpec.*",
                ".*Trying to infer the `batch_size`.*", ".*number of training batches.*",
                ".*module\\(s\\) in eval mode.*"):  # the frozen tokenizer and the EMA copy are eval on purpose
    warnings.filterwarnings("ignore", message=pattern)
# Lightning's banner lines (accelerator summary, tips) at INFO: ldae logs its own summary.
logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)


def fit_tokenizer(cfg: DictConfig, train_set, out: Path | None = None) -> tuple[Tokenizer, dict]:
    """Build the tokenizer and fit/train it on the clean training images (or load its cached artifact)."""
    tokenizer = build_tokenizer(cfg.tokenizer)
    # (tokenizer=none fits nothing: no seed, no image budget)
    limit = cfg.tokenizer.fit_images if tokenizer.needs_fit else None
    fit_seed = int(cfg.tokenizer.seed) if tokenizer.needs_fit else 0
    subset = random_subset(train_set, limit, fit_seed)  # a seeded sample of the whole set, never a prefix
    workers = int(cfg.data.num_workers)

    if isinstance(tokenizer, TrainableTokenizer):
        bs = min(int(cfg.tokenizer.train_batch_size), len(subset))

        def batches():  # re-iterable: gradient training takes as many passes as its step budget needs
            g = torch.Generator().manual_seed(fit_seed)
            return DataLoader(subset, batch_size=bs, shuffle=True, drop_last=True, generator=g, num_workers=workers)
    else:
        def batches():
            return ImageBatches(DataLoader(subset, batch_size=256, shuffle=False, num_workers=workers), len(subset))

    fp = {**data_fingerprint(cfg.data), "fit_images": limit, "fit_sample": {"kind": "seeded_random", "seed": fit_seed}}
    fit = None  # tokenizer.fit
    if isinstance(tokenizer, TrainableTokenizer):  # gradient training, its curves in the run's CSV
        logger = CSVLogger(str(out), name="csv", version="tokenizer") if out is not None else None
        fit = functools.partial(fit_trainable, logger=logger)
    record = fit_or_load(tokenizer, batches, fp, cfg.paths.cache_dir if cfg.tokenizer.cache else None, fit=fit)
    return tokenizer, record


@torch.no_grad()
def evaluate_tokenizer(tokenizer: Tokenizer, val_set, out: Path | None, seed: int, max_images: int = 512,
                       grid_images: int = 16) -> dict:
    """Reconstruction PSNR (dB, pixels in [-1, 1]) on a seeded random sample of the validation split; an image
    grid of originals over their reconstructions at `out/tokenizer_recon.png`; `tokenizer/psnr` in the CSV."""
    was = tokenizer.training
    tokenizer.eval()
    loader = DataLoader(random_subset(val_set, max_images, seed), batch_size=128, shuffle=False)
    se, count, first = 0.0, 0, None
    for x, _, _ in loader:
        r = tokenizer.decode(tokenizer.encode(x)).clamp(-1, 1)
        se += float((r - x).pow(2).flatten(1).mean(1).sum())
        count += x.shape[0]
        if first is None:
            first = (x[:grid_images], r[:grid_images])
    tokenizer.train(was)
    mse = max(se / max(count, 1), 1e-10)
    psnr = 10.0 * math.log10(4.0 / mse)  # peak-to-peak range 2
    if out is not None and first is not None:
        from torchvision.utils import save_image

        save_image(torch.cat(first) * 0.5 + 0.5, out / "tokenizer_recon.png", nrow=first[0].shape[0])
        lg = CSVLogger(str(out), name="csv", version="tokenizer_eval")
        lg.log_metrics({"tokenizer/psnr": psnr, "tokenizer/mse": mse})
        lg.save()
    return {"psnr": psnr, "mse": mse, "images": count}


def clean_train_set(cfg: DictConfig, dm: LDAEDataModule):
    """The training images as the tokenizer sees them: center crops without flips (the loader's own set when
    it augments nothing)."""
    if cfg.data.crop == "center" and not cfg.data.hflip:
        return dm.train_set
    return build_dataset(cfg.data, "train", augment=False)


def pretrain(cfg: DictConfig, out: Path, ckpt_path: str | None = None) -> tuple[PretrainModule, LDAEDataModule, dict]:
    dm = LDAEDataModule(cfg.data, resolve(cfg).pretrain, seed=int(cfg.seed))
    dm.setup()
    clean_train = clean_train_set(cfg, dm)
    t0 = time.time()
    tokenizer, tok_record = fit_tokenizer(cfg, clean_train, out)
    tok_s = time.time() - t0
    tok_eval = evaluate_tokenizer(tokenizer, dm.val_set, out if is_rank_zero() else None, int(cfg.seed))
    log.info("tokenizer %s: d=%d, val PSNR %.2f dB", tokenizer.name, tokenizer.latent_dim, tok_eval["psnr"])
    publish_tokenizer(cfg, out, tokenizer, dm.val_set, tok_eval)
    if cfg.tokenizer.get("latent_cache"):
        t1 = time.time()
        key = tok_record.get("key") or "uncached"
        lc_dir = Path(cfg.paths.cache_dir) / "latents" / f"{tokenizer.name}-{key}"
        build_latent_cache(tokenizer, clean_train, lc_dir, rank=global_rank(), world=launched_world_size(),
                           device=stage_device(cfg))
        dm.latent_train_set = LatentDataset(lc_dir)
        tok_record["latent_cache"] = {"path": str(lc_dir), "wall_s": time.time() - t1}
    # Re-seed: fitting a tokenizer draws random numbers and loading a cached one does not, and the
    # initial weights must not depend on which of the two happened.
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    module = PretrainModule.from_config(cfg, tokenizer)
    module.tokenizer_record = tok_record
    # last.ckpt at every epoch end and every `checkpoint.every_n_steps` optimiser steps (mid-epoch resume).
    ckpt = LastCheckpoint(out / "checkpoints", cfg.checkpoint.every_n_steps)
    callbacks = [ConsumedBatches(), BadImageReport(), ckpt, LearningRateMonitor("step"), StopAtStepEnd()]
    if cfg.get("online_probe") and cfg.online_probe.enabled:
        callbacks.append(OnlineProbe.from_config(cfg, module))
    if (kill := KillAtStep.from_env()) is not None:
        callbacks.append(kill)
    if cfg.pictures.enabled:
        callbacks.append(DenoisingPanels(*panel_images(dm.val_set, int(cfg.pictures.num_images)), out / "pictures",
                                         cfg.pictures.every_n_steps, seed=int(cfg.seed)))
    trainer = pl.Trainer(**trainer_kwargs(cfg.trainer, str(out)), default_root_dir=str(out),
                         accumulate_grad_batches=dm.accumulate, logger=loggers_for(cfg, out, "pretrain"),
                         callbacks=callbacks, gradient_clip_val=cfg.optim.gradient_clip, num_sanity_val_steps=0,
                         plugins=[AtomicCheckpointIO()], use_distributed_sampler=False)  # the sampler shards itself
    t0 = time.time()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    info = {
        "pretrain_loss": module.last_epoch_loss,
        "pretrain_val_loss": _first_not_none(_metric(trainer, "pretrain/val_loss"),
                                             module.last_val_loss),  # restored when no epoch ran
        "pretrain_wall_s": time.time() - t0,
        "tokenizer_wall_s": tok_s,
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "tokenizer": tok_record,
        "tokenizer_psnr": tok_eval["psnr"],
        "world_size": trainer.world_size,
        **{k: v for k, v in module._opt_info.items()},
        "device_batch_size": dm.device_batch,
        "skipped_steps": module.skipped_steps,
    }
    gen = cfg.get("gen")
    if gen is not None and gen.enabled and trainer.is_global_zero:  # DiT rows: samples grid and FID
        info.update(generation_stage(cfg, module, clean_train, out, trainer.loggers, trainer.global_step))
    if trainer.is_global_zero:
        set_summary(trainer.loggers, {"pretrain/loss": info["pretrain_loss"], "tokenizer/psnr": info["tokenizer_psnr"],
                                      "gen/fid": info.get("gen_fid")})
    return module, dm, info


def publish_tokenizer(cfg: DictConfig, out: Path, tokenizer: Tokenizer, val_set, tok_eval: dict) -> None:
    """The tokenizer stage's pictures (reconstructions, PCA bases, latent noise) as PNGs, and with
    logger=wandb a `tokenizer` run holding them and `tokenizer/psnr`. Rank zero only."""
    if not is_rank_zero():
        return
    pics = tokenizer_pictures(cfg, tokenizer, val_set, out)
    if cfg.logger.wandb:
        wl = make_wandb_logger(cfg, out, "tokenizer")
        if wl is not None:
            set_summary([wl], {"tokenizer/psnr": tok_eval["psnr"], "tokenizer/mse": tok_eval["mse"]})
            log_pictures([wl], {k: str(v) for k, v in pics.items()})


def _first_not_none(*values):
    return next((v for v in values if v is not None), None)


def _metric(trainer: pl.Trainer, name: str) -> float | None:
    v = trainer.callback_metrics.get(name)
    return float(v) if v is not None else None
