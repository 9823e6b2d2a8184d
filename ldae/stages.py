"""The stages of one run: fit the tokenizer, pretrain, probe (plus the baselines). Used by ldae-train/-probe."""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor
from torch.utils.data import DataLoader, TensorDataset

from ldae.plan import accelerator_of, device_of, probe_batches, resolve, world_size_of
from ldae.distributed import is_rank_zero, trainer_kwargs
from ldae.data import LDAEDataModule, build_dataset, data_fingerprint
from ldae.data.datamodule import BadImageReport
from ldae.data.sampling import ConsumedBatches, random_subset
from ldae.lit.csv_metrics import AppendingCSVLogger as CSVLogger  # a resumed run keeps its curves
from ldae.lit.checkpointing import AtomicCheckpointIO, KillAtStep, LastCheckpoint
from ldae.signals import StopAtStepEnd
from ldae.lit.pretrain import PretrainModule, build_backbone_for
from ldae.lit.probe import EncoderFeatures, LinearProbe, PixelFeatures
from ldae.tokenizers import Tokenizer, TrainableTokenizer, build_tokenizer, fit_or_load
from ldae.tokenizers.base import ImageBatches

log = logging.getLogger("ldae")

# Lightning's advice lines that do not apply to in-memory data on CPU.
for pattern in (".*does not have many workers.*", ".*GPU available but not used.*", ".*LeafSpec.*",
                ".*Trying to infer the `batch_size`.*", ".*number of training batches.*",
                ".*module\\(s\\) in eval mode.*"):  # the frozen tokenizer and the EMA copy are eval on purpose
    warnings.filterwarnings("ignore", message=pattern)
# Lightning's banner lines (accelerator summary, tips) at INFO: ldae logs its own summary.
logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)


def stage_accelerator(cfg: DictConfig) -> str:
    """The accelerator of the stages' own Trainers (probe, fine-tuning): the run's, or the CPU without a GPU."""
    return accelerator_of(cfg.trainer)


def stage_device(cfg: DictConfig) -> str:
    """Where the work outside Lightning's loops runs (latent cache, probe features): the GPU the trainer asks for."""
    return device_of(cfg.trainer)


def loggers_for(cfg: DictConfig, out: Path, stage: str) -> list:
    loggers = [CSVLogger(str(out), name="csv", version=stage)]
    if cfg.logger.wandb:
        from ldae.wandb_logger import make_wandb_logger

        wl = make_wandb_logger(cfg, out, stage)
        if wl is not None:
            loggers.append(wl)
    return loggers


def fit_tokenizer(cfg: DictConfig, train_set, out: Path | None = None) -> tuple[Tokenizer, dict]:
    """Build the tokenizer and fit/train it on the clean training images (or load its cached artifact)."""
    tokenizer = build_tokenizer(cfg.tokenizer)
    limit = cfg.tokenizer.get("fit_images")
    fit_seed = int(cfg.tokenizer.seed) if tokenizer.needs_fit else 0  # (tokenizer=none fits nothing: no seed)
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
    logger = CSVLogger(str(out), name="csv", version="tokenizer") if out is not None else None
    record = fit_or_load(tokenizer, batches, fp, cfg.paths.cache_dir if cfg.tokenizer.get("cache") else None,
                         logger=logger)
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
        from ldae.distributed import global_rank, launched_world_size
        from ldae.tokenizers.latent_cache import LatentDataset, build_latent_cache

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
    module = PretrainModule(OmegaConf.to_container(cfg, resolve=True), tokenizer)
    module.tokenizer_record = tok_record
    # last.ckpt at every epoch end and every `checkpoint.every_n_steps` optimiser steps (mid-epoch resume).
    ckpt = LastCheckpoint(out / "checkpoints", cfg.checkpoint.every_n_steps)
    callbacks = [ConsumedBatches(), BadImageReport(), ckpt, LearningRateMonitor("step"), StopAtStepEnd()]
    if cfg.get("online_probe") and cfg.online_probe.enabled:
        from ldae.lit.online_probe import OnlineProbe

        callbacks.append(OnlineProbe.from_config(cfg, module))
    if (kill := KillAtStep.from_env()) is not None:
        callbacks.append(kill)
    if cfg.pictures.enabled:
        from ldae.pictures import DenoisingPanels, panel_images

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
        from ldae.generation import generation_stage

        info.update(generation_stage(cfg, module, clean_train, out, trainer.loggers, trainer.global_step))
    if trainer.is_global_zero:
        from ldae.wandb_logger import set_summary

        set_summary(trainer.loggers, {"pretrain/loss": info["pretrain_loss"], "tokenizer/psnr": info["tokenizer_psnr"],
                                      "gen/fid": info.get("gen_fid")})
    return module, dm, info


def publish_tokenizer(cfg: DictConfig, out: Path, tokenizer: Tokenizer, val_set, tok_eval: dict) -> None:
    """The tokenizer stage's pictures (reconstructions, PCA bases, latent noise) as PNGs, and with
    logger=wandb a `tokenizer` run holding them and `tokenizer/psnr`. Rank zero only."""
    if not is_rank_zero():
        return
    from ldae.pictures import tokenizer_pictures

    pics = tokenizer_pictures(cfg, tokenizer, val_set, out)
    if cfg.logger.wandb:
        from ldae.wandb_logger import log_pictures, make_wandb_logger, set_summary

        wl = make_wandb_logger(cfg, out, "tokenizer")
        if wl is not None:
            set_summary([wl], {"tokenizer/psnr": tok_eval["psnr"], "tokenizer/mse": tok_eval["mse"]})
            log_pictures([wl], {k: str(v) for k, v in pics.items()})


def _first_not_none(*values):
    return next((v for v in values if v is not None), None)


def _metric(trainer: pl.Trainer, name: str) -> float | None:
    v = trainer.callback_metrics.get(name)
    return float(v) if v is not None else None


def probe_data_config(cfg: DictConfig) -> DictConfig:
    """The `data` node of the probe's labelled images: `probe_data` when set (another dataset, read at the
    pretraining input: data.image_size; every dataset gives 3 channels in [-1, 1]), else the pretraining data."""
    pd = cfg.get("probe_data")
    if pd is None:
        return cfg.data
    return OmegaConf.merge(pd, {"image_size": int(cfg.data.image_size)})


def probe_datasets(cfg: DictConfig, dm: LDAEDataModule | None):
    """(train, val) datasets for the probe: clean views, or augmented train images when probe.augment."""
    pr, data = cfg.probe, probe_data_config(cfg)
    if cfg.get("probe_data") is not None:
        dm = None  # the loader's sets are the pretraining data's
    if pr.augment:
        aug = OmegaConf.merge(data, {"crop": "random_resized", "hflip": True})
        train = build_dataset(aug, "train", min_scale=float(pr.get("crop_min_scale", 0.2)))
    elif dm is not None and data.crop == "center" and not data.hflip:
        train = dm.train_set
    else:
        train = build_dataset(data, "train", augment=False)
    val = dm.val_set if dm is not None else build_dataset(data, "val", augment=False)
    return probe_subsets(cfg, train, val)


def probe_subsets(cfg: DictConfig, train, val):
    """Seeded random samples of probe.num_train / num_val images (all of a split when null or not smaller)."""
    seed = int(cfg.seed)
    return random_subset(train, cfg.probe.num_train, seed), random_subset(val, cfg.probe.num_val, seed + 1)


def linear_probe(cfg: DictConfig, extractor, feature_dim: int, train_set, val_set, out: Path, tag: str) -> dict:
    """Train the linear head on `extractor`'s features and return {top1, curve}."""
    if cfg.probe.cache_features:
        from ldae.evaluation import probe_features

        ftr, ytr, fva, yva, cache_info = probe_features(cfg, extractor, train_set, val_set, tag)
        return train_head(cfg, TensorDataset(ftr, ytr), TensorDataset(fva, yva), feature_dim, out, tag,
                          cache_info=cache_info)
    return train_head(cfg, train_set, val_set, feature_dim, out, tag, extractor=extractor)


def train_head(cfg: DictConfig, train_set, val_set, feature_dim: int, out: Path, tag: str, extractor=None,
               cache_info: dict | None = None) -> dict:
    """The probe head on (feature, label) datasets, or on images through a frozen `extractor`: {top1, curve}."""
    pr = cfg.probe
    fbs = int(pr.feature_batch_size)
    workers = int(cfg.data.num_workers)
    # features in memory train in whole batches; images through the extractor in accumulated pieces
    b = probe_batches(pr, len(train_set), world_size_of(cfg.trainer), cached=extractor is None)
    batch, accum = b.per_device, b.accumulate
    # Same head init and order for every probed network, and independent of the RNG history of pretraining
    # (so a resumed run probes exactly as an uninterrupted one) and of whether the features were extracted
    # now (the loaders draw seeds) or read from the disk cache.
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    probe = LinearProbe(feature_dim, probe_data_config(cfg).num_classes, optimizer=pr.optimizer, base_lr=b.base_lr,
                        batch_size=b.effective, momentum=pr.momentum, weight_decay=pr.weight_decay,
                        warmup_epochs=pr.warmup_epochs, extractor=extractor)
    g = torch.Generator().manual_seed(int(cfg.seed))
    train_loader = DataLoader(train_set, batch_size=batch, shuffle=True, drop_last=len(train_set) > batch,
                              generator=g, num_workers=0 if extractor is None else workers)
    val_loader = DataLoader(val_set, batch_size=max(batch, fbs), shuffle=False,
                            num_workers=0 if extractor is None else workers)
    trainer = pl.Trainer(**probe_devices(cfg), max_epochs=pr.epochs, logger=loggers_for(cfg, out, f"probe_{tag}"),
                         enable_checkpointing=False, enable_progress_bar=cfg.trainer.enable_progress_bar,
                         enable_model_summary=False, accumulate_grad_batches=accum, num_sanity_val_steps=0,
                         check_val_every_n_epoch=max(1, pr.epochs // 10), log_every_n_steps=1)  # the per-step lr curve
    trainer.fit(probe, train_loader, val_loader)
    curve = probe.history
    log.info("probe %s: top1 %.2f, head training %.0f samples/s (%s features)", tag, curve[-1]["top1"],
             probe.samples_per_s, "cached" if extractor is None else "on-the-fly")
    if trainer.is_global_zero:
        from ldae.wandb_logger import log_pictures, set_summary

        set_summary(trainer.loggers, {"probe/top1": curve[-1]["top1"]})
        if cfg.get("pictures") is not None and cfg.pictures.enabled:  # (a checkpoint's config may predate it)
            from ldae.pictures import probe_curve

            png = probe_curve(curve, out / "pictures" / f"probe_{tag}.png", title=f"{cfg.name}: probe ({tag})")
            log_pictures(trainer.loggers, {"pictures/probe_curve": png})
    return {"top1": curve[-1]["top1"], "curve": curve, "lr": probe.lr, "base_lr": probe.base_lr,
            "batch_size": b.effective, "samples_per_s": probe.samples_per_s, "feature_cache": cache_info}


def probe_grid(cfg: DictConfig, module: PretrainModule, out: Path, ts: list[int], blocks: list[int]) -> list[dict]:
    """One linear head per (t, block) on one pretrained encoder (PAPER.md App. A's two sweeps in one): per t
    one forward over the probe data reads every block (features cached per t), then a head per block.
    Returns [{t, block, top1}] in (t, block) order."""
    if not cfg.probe.cache_features:
        raise ValueError("a probe grid trains its heads on cached features: set probe.cache_features=true "
                         "(and probe.augment=false)")
    from ldae.evaluation import probe_features
    from ldae.lit.probe import GridFeatures

    blocks = sorted(set(int(b) for b in blocks))
    train_set, val_set = probe_datasets(cfg, None)
    grid = []
    for t in ts:
        tcfg = cfg.copy()
        OmegaConf.update(tcfg, "probe.t", int(t), merge=False)
        ext = GridFeatures(encoder_features(tcfg, module), blocks)
        ftr, ytr, fva, yva, _ = probe_features(tcfg, ext, train_set, val_set, f"grid_t{t}")
        for k, b in enumerate(blocks):
            cols = slice(k * ext.width, (k + 1) * ext.width)  # block b's (N, D) slice of the (N, K*D) features
            res = train_head(tcfg, TensorDataset(ftr[:, cols], ytr), TensorDataset(fva[:, cols], yva), ext.width,
                             out, f"grid_t{t}_b{b}")
            grid.append({"t": int(t), "block": b, "top1": res["top1"]})
            log.info("probe grid t=%d block=%d: top1 %.2f", t, b, res["top1"])
    return grid


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


def encoder_features(cfg: DictConfig, module: PretrainModule, backbone=None) -> EncoderFeatures:
    pr = cfg.probe
    return EncoderFeatures(backbone if backbone is not None else module.encoder(pr.use_ema), module.tokenizer,
                           module.objective, module.schedule, t=pr.t, noisy=pr.noisy,
                           clean_input=pr.clean_input, block=pr.block, seed=int(cfg.seed), pool=pr.pool,
                           t_offset=int(pr.get("t_offset", 0)))


def probe_all(cfg: DictConfig, module: PretrainModule, dm: LDAEDataModule | None, out: Path,
              baselines: bool) -> dict:
    """Probe the pretrained encoder and, with `baselines`, raw pixels and a random non-identity encoder."""
    train_set, val_set = probe_datasets(cfg, dm)
    res: dict = {}
    t0 = time.time()
    ext = encoder_features(cfg, module)
    p = linear_probe(cfg, ext, ext.dim, train_set, val_set, out, "encoder")
    res.update(probe_top1=p["top1"], probe_curve=p["curve"], probe_lr=p["lr"], probe_base_lr=p["base_lr"],
               probe_batch_size=p["batch_size"], probe_train_samples_per_s=p["samples_per_s"],
               probe_feature_cache=p["feature_cache"])
    if baselines:
        res.update(_baselines(cfg, module, train_set, val_set, out))
    res["probe_wall_s"] = time.time() - t0
    return res


def _baselines(cfg: DictConfig, module: PretrainModule, train_set, val_set, out: Path) -> dict:
    pix = PixelFeatures(cfg.data.image_size)
    res = {"baseline_pixels_top1": linear_probe(cfg, pix, pix.dim, train_set, val_set, out, "pixels")["top1"]}
    # A random encoder whose blocks are NOT identities: adaLN projections and gates initialised like the
    # other layers (adaln_zero=False), so it is a real random network rather than a patch embedding.
    torch.manual_seed(int(cfg.seed) + 1)
    rnd = build_backbone_for(module.cfg, module.geometry, adaln_zero=False)
    ext_r = encoder_features(cfg, module, backbone=rnd)
    res["baseline_random_top1"] = linear_probe(cfg, ext_r, ext_r.dim, train_set, val_set, out, "random")["top1"]
    return res


def baseline_probes(cfg: DictConfig, out: Path) -> dict:
    """The two probe baselines of a config without pretraining it (its tokenizer fitted or loaded): raw
    pixels and a random encoder of its architecture, by the same probe code on the same data. A trajectory
    measures them once, beside its rows."""
    dm = LDAEDataModule(cfg.data, resolve(cfg).pretrain, seed=int(cfg.seed))
    dm.setup()
    clean_train = clean_train_set(cfg, dm)
    tokenizer, _ = fit_tokenizer(cfg, clean_train)
    module = PretrainModule(OmegaConf.to_container(cfg, resolve=True), tokenizer)
    t0 = time.time()
    res = _baselines(cfg, module, *probe_datasets(cfg, dm), out)
    return {**res, "wall_s": time.time() - t0}
