"""Evaluate an encoder: the probe's data, the linear probe (plus its baselines), kNN and fine-tuning, and the
evaluation of a checkpoint that `ldae-probe` runs.

Protocols (`probe.name`): linear, MAE's linear probe on frozen features (ldae.lit.probe's head); knn, weighted
kNN on cached features (ldae.lit.knn); finetune, App. B's end-to-end fine-tuning of the encoder folded into a
timm ViT at t (ldae.models.timm_vit, ldae.lit.finetune). Features come from ldae.lit.features, from the disk
cache when they were extracted before. results.json names the protocol (`protocol`) and its top-1:
`probe_top1` (linear, the name the rest of the project reads), `knn_top1` or `finetune_top1`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from ldae.checkpoints import load_checkpoint_config, load_official, load_official_checkpoint, official_run_config
from ldae.config import validate
from ldae.data import LDAEDataModule, build_dataset, data_fingerprint
from ldae.data.datasets import warn_bad_images
from ldae.data.sampling import random_subset, subset_identity
from ldae.lit.features import (EncoderFeatures, GridFeatures, PixelFeatures, cached_features, feature_cache_dir,
                               feature_key)
from ldae.lit.finetune import AugmentedView, FineTuneModule, train_transform
from ldae.lit.knn import knn_top1
from ldae.lit.pretrain import PretrainModule, build_backbone_for
from ldae.lit.probe import LinearProbe
from ldae.plan import finetune_batches, probe_batches, probe_data, resolve, world_size_of
from ldae.models.timm_vit import build_vit, fold_encoder
from ldae.pictures import probe_curve
from ldae.runtime import loggers_for, probe_devices, stage_accelerator, stage_device
from ldae.stages import clean_train_set, fit_tokenizer
from ldae.utils.io import atomic_write_json, check_writable
from ldae.wandb_logger import log_pictures, set_summary

log = logging.getLogger("ldae")

TOP1_KEY = {"linear": "probe_top1", "knn": "knn_top1", "finetune": "finetune_top1"}


def probe_datasets(cfg: DictConfig, dm: LDAEDataModule | None):
    """(train, val) datasets for the probe: clean views, or augmented train images when probe.augment."""
    pr, data = cfg.probe, probe_data(cfg)
    if cfg.get("probe_data") is not None:
        dm = None  # the loader's sets are the pretraining data's
    if pr.augment:
        aug = OmegaConf.merge(data, {"crop": "random_resized", "hflip": True, "crop_min_scale": pr.crop_min_scale})
        train = build_dataset(aug, "train")
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


def encoder_features(cfg: DictConfig, module: PretrainModule, backbone=None) -> EncoderFeatures:
    pr = cfg.probe
    return EncoderFeatures(backbone if backbone is not None else module.encoder(pr.use_ema), module.tokenizer,
                           module.objective, module.schedule, t=pr.t, noisy=pr.noisy,
                           clean_input=pr.clean_input, block=pr.block, seed=int(cfg.seed), pool=pr.pool,
                           t_offset=int(pr.t_offset))


def probe_features(cfg: DictConfig, extractor, train_set, val_set, tag: str):
    """Features and labels of both splits, from the disk cache when `probe.disk_cache` (else extracted).

    Returns (train_f, train_y, val_f, val_y, info) with info: per split, whether the cache hit, and the time."""
    pr, pdata = cfg.probe, probe_data(cfg)
    cache_dir = feature_cache_dir(cfg) if pr.disk_cache else None
    ident = extractor.identity()
    data = {**data_fingerprint(pdata), "num_val": pdata.get("num_val")}  # the probe's images, not pretraining's
    out, info = [], {}
    for ds, split in ((train_set, "train"), (val_set, "val")):
        loader = DataLoader(ds, batch_size=int(pr.feature_batch_size), shuffle=False,
                            num_workers=int(cfg.data.num_workers))
        key = feature_key(ident, {**data, "subset": subset_identity(ds)}, split, len(ds))
        f, y, info[split] = cached_features(extractor, loader, key, cache_dir, stage_device(cfg),
                                            f"features {tag} {split}")
        warn_bad_images(ds, f"probe features {tag} ({split})")
        out += [f, y]
    return (*out, info)


def linear_probe(cfg: DictConfig, extractor, feature_dim: int, train_set, val_set, out: Path, tag: str) -> dict:
    """Train the linear head on `extractor`'s features and return {top1, curve}."""
    if cfg.probe.cache_features:
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
    probe = LinearProbe(feature_dim, probe_data(cfg).num_classes, optimizer=pr.optimizer, base_lr=b.base_lr,
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
        set_summary(trainer.loggers, {"probe/top1": curve[-1]["top1"]})
        if cfg.get("pictures") is not None and cfg.pictures.enabled:  # (a checkpoint's config may predate it)
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
    module = PretrainModule.from_config(cfg, tokenizer)
    t0 = time.time()
    res = _baselines(cfg, module, *probe_datasets(cfg, dm), out)
    return {**res, "wall_s": time.time() - t0}


def knn_stage(cfg: DictConfig, module, out: Path) -> dict:
    """Weighted kNN (cosine, k, temperature) top-1 of the encoder's features of clean images."""
    pr = cfg.probe
    train_set, val_set = probe_datasets(cfg, None)
    ext = encoder_features(cfg, module)
    t0 = time.time()
    ftr, ytr, fva, yva, info = probe_features(cfg, ext, train_set, val_set, "encoder")
    top1 = knn_top1(ftr, ytr, fva, yva, int(probe_data(cfg).num_classes), int(pr.k), float(pr.temperature))
    log.info("knn: top1 %.2f (k=%d, T=%g) on %d train / %d val features", top1, pr.k, pr.temperature,
             len(ytr), len(yva))
    return {"knn_top1": top1, "knn_k": int(pr.k), "knn_temperature": float(pr.temperature),
            "probe_feature_cache": info, "knn_wall_s": time.time() - t0}


def finetune_datasets(cfg: DictConfig):
    """(train, val): clean center-cropped views; the fine-tune module adds App. B's augmentation."""
    data = probe_data(cfg)
    return probe_subsets(cfg, build_dataset(data, "train", augment=False), build_dataset(data, "val", augment=False))


def finetune_stage(cfg: DictConfig, module, out: Path) -> dict:
    """Fine-tune the checkpoint's encoder with the App. B recipe (cfg.probe); returns {finetune_top1, ...}."""
    pr = cfg.probe
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    backbone = module.encoder(pr.use_ema)
    sd, kwargs = fold_encoder(backbone, int(pr.t) + int(pr.t_offset), pr.block)  # the step it is conditioned on
    vit = build_vit(kwargs, num_classes=int(probe_data(cfg).num_classes), drop_path_rate=float(pr.drop_path))
    missing, unexpected = vit.load_state_dict(sd, strict=False)
    assert set(missing) == {"head.weight", "head.bias"} and not unexpected, (missing, unexpected)
    # The clean network input at t (the tokenizer's projection for image-input rows; frozen, no noise).
    inputs = EncoderFeatures(backbone, module.tokenizer, module.objective, module.schedule, t=int(pr.t),
                             clean_input=pr.clean_input, pool=pr.pool)

    def to_input(x):
        module.tokenizer.to(x.device)  # frozen, outside the fine-tuned module: follow the batch's device
        with torch.no_grad():
            return inputs.network_input(x, None)

    train_set, val_set = finetune_datasets(cfg)
    train_set = AugmentedView(train_set, train_transform(pr, int(cfg.data.image_size)))
    b = finetune_batches(pr, len(train_set))  # an even batch: MixUp pairs samples
    device_batch, accum = b.per_device, b.accumulate
    ft = FineTuneModule(vit, to_input, int(probe_data(cfg).num_classes), pr, b.effective)
    g = torch.Generator().manual_seed(int(cfg.seed))
    workers = int(cfg.data.num_workers)
    train_loader = DataLoader(train_set, batch_size=device_batch, shuffle=True, drop_last=True, generator=g,
                              num_workers=workers)
    val_loader = DataLoader(val_set, batch_size=max(device_batch, 64), shuffle=False, num_workers=workers)
    trainer = pl.Trainer(max_epochs=int(pr.epochs), accelerator=stage_accelerator(cfg), devices=1,
                         logger=loggers_for(cfg, out, "finetune"), enable_checkpointing=False,
                         enable_progress_bar=cfg.trainer.enable_progress_bar, enable_model_summary=False,
                         accumulate_grad_batches=accum, num_sanity_val_steps=0,
                         check_val_every_n_epoch=max(1, int(pr.epochs) // 10),
                         log_every_n_steps=max(1, min(10, len(train_loader) // accum)))
    t0 = time.time()
    trainer.fit(ft, train_loader, val_loader)
    last = ft.history[-1]
    res = {"finetune_top1": last["model_top1"], "finetune_curve": ft.history, "finetune_lr": ft.lr,
           "finetune_batch_size": b.effective, "finetune_wall_s": time.time() - t0,
           "finetune_train_samples_per_s": ft.train_samples / max(ft.train_seconds, 1e-9)}
    if "ema_top1" in last:
        res["finetune_ema_top1"] = last["ema_top1"]
    log.info("finetune: top1 %.2f (EMA %s) after %d epochs", res["finetune_top1"], res.get("finetune_ema_top1"),
             pr.epochs)
    return res


def run_protocol(cfg: DictConfig, module, out: Path, baselines: bool) -> dict:
    """Evaluate `module`'s encoder with the protocol `cfg.probe.name`; the dict goes into results.json."""
    name = cfg.probe.name
    if name == "linear":
        res = probe_all(cfg, module, None, out, baselines=baselines)
    elif name == "knn":
        res = knn_stage(cfg, module, out)
    else:
        res = finetune_stage(cfg, module, out)
    return {"protocol": name, **res}


def probe_config(stored: dict, cli: DictConfig, probe_keys: Iterable[str] = ()) -> DictConfig:
    """The run config that evaluates a checkpoint: its stored config (upgraded by load_checkpoint_config) with the
    command line's values (`cli`, an `eval` config) of `probe_keys` -- `probe` for a recipe chosen whole (probe=NAME),
    or single `probe.KEY`s over the stored recipe -- its probe_data when given, and its logger. Struct, not validated."""
    run_cfg = OmegaConf.create(stored)
    for key in probe_keys:
        OmegaConf.update(run_cfg, key, OmegaConf.select(cli, key), merge=False)
    if cli.get("probe_data") is not None:  # another labelled set than the run's (read at its input size)
        run_cfg.probe_data = cli.probe_data
    OmegaConf.set_struct(run_cfg, True)
    run_cfg.logger = cli.logger
    return run_cfg


def evaluate_checkpoint(cfg: DictConfig, output_dir: str | Path, probe_keys: Iterable[str] = ()) -> dict:
    """Evaluate the checkpoint `cfg.ckpt_path` (`cfg`: the `eval` config of ldae-probe) with the stored recipe and
    the command line's `probe_keys` over it (probe_config); writes config.yaml and results.json to output_dir."""
    t0 = time.time()
    check_writable(output_dir, "output_dir")  # before the checkpoint is read
    if cfg.get("official") is not None:
        return _evaluate_official(cfg, Path(output_dir), t0)
    ckpt, stored = load_checkpoint_config(cfg.ckpt_path)
    run_cfg = probe_config(stored, cfg, probe_keys)
    validate(run_cfg)
    module = PretrainModule.from_config(run_cfg)
    module.load_state_dict(ckpt["state_dict"])
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(run_cfg, out / "config.yaml", resolve=True)
    res = run_protocol(run_cfg, module, out, baselines=bool(cfg.baselines))
    results = {"experiment": run_cfg.name, "scale": run_cfg.scale_name, "seed": int(run_cfg.seed),
               "ckpt_path": str(cfg.ckpt_path), "pretrain_step": int(ckpt.get("global_step", -1)),
               **res, "wall_s": time.time() - t0}
    atomic_write_json(out / "results.json", results)
    return results


def _evaluate_official(cfg: DictConfig, out: Path, t0: float) -> dict:
    ckpt = load_official_checkpoint(cfg.ckpt_path)
    run_cfg = official_run_config(cfg)
    OmegaConf.set_struct(run_cfg, True)
    run_cfg.logger = cfg.logger
    validate(run_cfg)
    module = PretrainModule.from_config(run_cfg)
    load_official(module, ckpt, float(cfg.official.latent_scale))
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(run_cfg, out / "config.yaml", resolve=True)
    res = run_protocol(run_cfg, module, out, baselines=bool(cfg.baselines))
    results = {"experiment": "official_dit", "scale": run_cfg.scale_name, "seed": int(run_cfg.seed),
               "ckpt_path": str(cfg.ckpt_path), "model": str(run_cfg.model.name), "probe_t": int(run_cfg.probe.t),
               "dit_step": int(run_cfg.probe.t) + int(run_cfg.probe.t_offset), **res, "wall_s": time.time() - t0}
    atomic_write_json(out / "results.json", results)
    return results
