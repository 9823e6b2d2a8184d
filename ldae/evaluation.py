"""The evaluation protocols of `ldae-probe ... probe=linear|finetune|knn` and their shared feature step.

linear: MAE's linear probe (ldae.stages.linear_probe); knn: weighted kNN on cached features (ldae.lit.knn);
finetune: App. B's end-to-end fine-tuning of the encoder folded into a timm ViT at t (ldae.lit.finetune).
results.json names the protocol (`protocol`) and its top-1: `probe_top1` (linear, the name the rest of the
project reads), `knn_top1` or `finetune_top1`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig
from torch.utils.data import DataLoader

from ldae.data import build_dataset, data_fingerprint
from ldae.data.datasets import warn_bad_images
from ldae.data.sampling import subset_identity
from ldae.lit.feature_cache import cached_features, feature_cache_dir, feature_key

log = logging.getLogger("ldae")

TOP1_KEY = {"linear": "probe_top1", "knn": "knn_top1", "finetune": "finetune_top1"}


def probe_features(cfg: DictConfig, extractor, train_set, val_set, tag: str):
    """Features and labels of both splits, from the disk cache when `probe.disk_cache` (else extracted).

    Returns (train_f, train_y, val_f, val_y, info) with info: per split, whether the cache hit, and the time."""
    from ldae.stages import probe_data_config, stage_device

    pr, pdata = cfg.probe, probe_data_config(cfg)
    cache_dir = feature_cache_dir(cfg) if pr.get("disk_cache", True) else None
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


def knn_stage(cfg: DictConfig, module, out: Path) -> dict:
    """Weighted kNN (cosine, k, temperature) top-1 of the encoder's features of clean images."""
    from ldae.lit.knn import knn_top1
    from ldae.stages import encoder_features, probe_data_config, probe_datasets

    pr = cfg.probe
    train_set, val_set = probe_datasets(cfg, None)
    ext = encoder_features(cfg, module)
    t0 = time.time()
    ftr, ytr, fva, yva, info = probe_features(cfg, ext, train_set, val_set, "encoder")
    top1 = knn_top1(ftr, ytr, fva, yva, int(probe_data_config(cfg).num_classes), int(pr.k), float(pr.temperature))
    log.info("knn: top1 %.2f (k=%d, T=%g) on %d train / %d val features", top1, pr.k, pr.temperature,
             len(ytr), len(yva))
    return {"knn_top1": top1, "knn_k": int(pr.k), "knn_temperature": float(pr.temperature),
            "probe_feature_cache": info, "knn_wall_s": time.time() - t0}


def finetune_datasets(cfg: DictConfig):
    """(train, val): clean center-cropped views; the fine-tune module adds App. B's augmentation."""
    from ldae.stages import probe_data_config, probe_subsets

    data = probe_data_config(cfg)
    return probe_subsets(cfg, build_dataset(data, "train", augment=False), build_dataset(data, "val", augment=False))


def run_protocol(cfg: DictConfig, module, out: Path, baselines: bool) -> dict:
    """Evaluate `module`'s encoder with the protocol `cfg.probe.name`; the dict goes into results.json."""
    from ldae.stages import probe_all

    name = cfg.probe.name
    if name == "linear":
        res = probe_all(cfg, module, None, out, baselines=baselines)
    elif name == "knn":
        res = knn_stage(cfg, module, out)
    else:
        from ldae.lit.finetune import finetune_stage

        res = finetune_stage(cfg, module, out)
    return {"protocol": name, **res}


def module_from_checkpoint(ckpt_path: str):
    """(PretrainModule with the checkpoint's weights, its stored run config upgraded to today's keys)."""
    from omegaconf import OmegaConf

    from ldae.lit.pretrain import PretrainModule
    from ldae.probe import load_checkpoint_config, upgrade_stored_config

    ckpt, stored = load_checkpoint_config(ckpt_path)
    cfg = OmegaConf.create(upgrade_stored_config(stored))
    module = PretrainModule(OmegaConf.to_container(cfg, resolve=True))
    module.load_state_dict(ckpt["state_dict"])
    return module, cfg
