"""Linear probe on frozen features (PAPER.md 2.6, MAE's protocol).

Features: the global-average-pooled encoder output for clean input conditioned on t = 10 (App. A); a
class-conditional backbone gets the null class, never the label. Head: BatchNorm without affine
(eps 1e-6) + Linear (trunc-normal std 0.01). The head trains either on cached features (augmentation off)
or on features computed on the fly from augmented images by the frozen extractor.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from timm.layers import trunc_normal_
from timm.optim import Lars
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ldae.diffusion.noise import STREAM_EPS, keyed_normal, sample_keys
from ldae.lit.schedules import per_step_schedule
from ldae.plan import scaled_lr

from ldae.choices import CLEAN_INPUTS, PROBE_OPTIMIZERS, PROBE_POOLS


def check_pool(pool: str) -> None:
    """Only global average pooling exists: the DiT encoder has no class token (PAPER.md 2.4)."""
    if pool not in PROBE_POOLS:
        raise ValueError(f"unknown probe.pool '{pool}'; allowed: {', '.join(PROBE_POOLS)}")
    if pool == "cls":
        raise ValueError("probe.pool=cls needs a class token, and the DiT encoder has none (the paper pools "
                         "globally, PAPER.md 2.4); allowed: avg")


def clean_network_input(x: torch.Tensor, tokenizer, objective, clean_input: str = "projected") -> torch.Tensor:
    """The noise-free network input of images x: the latent, the projected image, or the image itself."""
    if objective.input == "latent":
        return tokenizer.encode(x)
    return x if clean_input == "original" else tokenizer.decode(tokenizer.encode(x))


class EncoderFeatures(nn.Module):
    """Image batch -> (B, width) features of a frozen DiT encoder, as the probe config asks."""

    def __init__(self, backbone, tokenizer, objective, schedule, t: int = 10, noisy: bool = False,
                 clean_input: str = "projected", block: int | None = None, seed: int = 0, pool: str = "avg",
                 t_offset: int = 0):
        super().__init__()
        check_pool(pool)
        if clean_input not in CLEAN_INPUTS:
            raise ValueError(f"unknown probe.clean_input '{clean_input}'; allowed: {', '.join(CLEAN_INPUTS)}")
        if not 0 <= t <= schedule.num_steps:
            raise ValueError(f"probe.t={t} must be in 0..{schedule.num_steps}")
        self.backbone, self.tokenizer, self.objective, self.schedule = backbone, tokenizer, objective, schedule
        self.t, self.noisy, self.clean_input, self.block, self.seed = t, noisy, clean_input, block, seed
        # Added to t for the backbone only, as the sampler's gen.t_offset: -1 for official DiT checkpoints,
        # conditioned on DDPM's step k = t - 1 while the noise of level t is what t means here.
        self.pool, self.t_offset = pool, int(t_offset)
        if self.t + self.t_offset < 0:
            raise ValueError(f"probe.t={t} with probe.t_offset={t_offset} conditions on step {t + t_offset}; "
                             f"allowed: probe.t >= {-self.t_offset}")
        self.requires_grad_(False)

    @property
    def dim(self) -> int:
        return self.backbone.hidden_size

    def identity(self) -> dict:
        """What the features depend on besides the images: the weights and the probe settings (cache key)."""
        from ldae.lit.feature_cache import weights_digest

        return {"kind": "encoder", "weights": weights_digest(self.backbone, self.tokenizer), "t": self.t,
                "noisy": self.noisy, "seed": self.seed if self.noisy else None, "clean_input": self.clean_input,
                "block": self.block, "pool": self.pool, "input": self.objective.input,
                **({"t_offset": self.t_offset} if self.t_offset else {})}  # old cache keys stay valid

    def network_input(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        if not self.noisy:
            return clean_network_input(x, self.tokenizer, self.objective, self.clean_input)
        z0 = self.tokenizer.encode(x)
        idx = index if index is not None else torch.arange(x.shape[0], device=x.device)
        eps = keyed_normal(sample_keys(self.seed, 0, idx), tuple(z0.shape[1:]), STREAM_EPS, z0.dtype)
        t = torch.full((x.shape[0],), self.t, device=x.device, dtype=torch.long)
        return self.objective.network_input(self.schedule.corrupt(z0, eps, t), self.tokenizer)

    @torch.no_grad()
    def timesteps(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) the backbone's conditioning step: probe.t plus the checkpoint's t_offset."""
        return torch.full((x.shape[0],), self.t + self.t_offset, device=x.device, dtype=torch.long)

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        self.backbone.eval()
        return self.backbone.forward_features(self.network_input(x, index), self.timesteps(x), None, self.block)


class GridFeatures(nn.Module):
    """An EncoderFeatures read after each of `blocks` in one forward: (B, K*D), block k in columns k*D:(k+1)*D."""

    def __init__(self, encoder: EncoderFeatures, blocks: list[int]):
        super().__init__()
        depth = len(encoder.backbone.blocks)
        bad = [b for b in blocks if not 1 <= b <= depth]
        if bad:
            raise ValueError(f"probe grid blocks {bad} outside 1..{depth} (the backbone's depth)")
        self.encoder, self.blocks = encoder, sorted(set(blocks))
        self.width = encoder.dim
        self.dim = self.width * len(self.blocks)

    def identity(self) -> dict:
        return {**self.encoder.identity(), "block": None, "blocks": self.blocks}

    @torch.no_grad()
    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        enc = self.encoder
        enc.backbone.eval()
        return enc.backbone.block_features(enc.network_input(x, index), enc.timesteps(x), None,
                                           self.blocks).flatten(1)  # (B, K*D)


class PixelFeatures(nn.Module):
    """The raw-pixel baseline: the image itself, flattened."""

    def __init__(self, image_size: int):
        super().__init__()
        self.dim = 3 * image_size * image_size

    def identity(self) -> dict:
        return {"kind": "pixels"}

    @torch.no_grad()
    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return x.flatten(1)


@torch.no_grad()
def extract_features(extractor: nn.Module, loader: DataLoader, device: torch.device | str = "cpu",
                     desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """Run `extractor` over a loader of (x, y, index): features (N, D) and labels (N,) on the CPU."""
    extractor.to(device)
    feats, labels = [], []
    for x, y, idx in tqdm(loader, desc=desc, leave=False):
        feats.append(extractor(x.to(device), idx.to(device)).float().cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


class LinearProbe(pl.LightningModule):
    """BN(affine=False) + Linear on features; `extractor` (frozen) turns images into features when given.

    The probe owns only the parameters it adds (the head); the extractor is frozen and in eval mode.
    """

    def __init__(self, feature_dim: int, num_classes: int, optimizer: str = "lars", base_lr: float = 0.1,
                 batch_size: int = 16384, momentum: float = 0.9, weight_decay: float = 0.0,
                 warmup_epochs: int = 10, extractor: nn.Module | None = None):
        super().__init__()
        if optimizer not in PROBE_OPTIMIZERS:
            raise ValueError(f"unknown probe.optimizer '{optimizer}'; allowed: {', '.join(PROBE_OPTIMIZERS)}")
        self.head = nn.Sequential(nn.BatchNorm1d(feature_dim, affine=False, eps=1e-6),
                                  nn.Linear(feature_dim, num_classes))
        trunc_normal_(self.head[1].weight, std=0.01)
        nn.init.zeros_(self.head[1].bias)
        self.extractor = extractor
        if extractor is not None:
            extractor.requires_grad_(False)
        self.opt_name, self.base_lr, self.batch_size = optimizer, base_lr, batch_size
        self.momentum, self.weight_decay, self.warmup_epochs = momentum, weight_decay, warmup_epochs
        self.lr = scaled_lr(base_lr, batch_size)  # lr = base lr x effective batch / 256 (MAE)
        self._correct = self._total = 0
        self.history: list[dict] = []  # (epoch, top1) after each validation: the probe's accuracy curve
        self.train_samples, self.train_seconds = 0, 0.0  # head-training throughput (samples/s)
        self._epoch_t0 = 0.0

    @property
    def samples_per_s(self) -> float:
        return self.train_samples / max(self.train_seconds, 1e-9)

    def on_train_start(self) -> None:
        # The recipe as numbers: lr = base lr x effective batch / 256 (MAE), both logged.
        self.log_dict({"probe/base_lr": float(self.base_lr), "probe/effective_batch": float(self.batch_size),
                       "probe/peak_lr": float(self.lr)}, sync_dist=False)

    def on_train_epoch_start(self) -> None:
        self._epoch_t0 = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        self.train_seconds += time.perf_counter() - self._epoch_t0

    def features(self, batch):
        if self.extractor is None:
            return batch[0], batch[1]
        x, y, idx = batch
        return self.extractor(x, idx), y

    def training_step(self, batch, batch_idx):
        f, y = self.features(batch)
        loss = nn.functional.cross_entropy(self.head(f), y)
        self.train_samples += y.shape[0]
        self.log("probe/loss", loss, prog_bar=True, sync_dist=True)
        self.log("probe/lr", self.optimizers().param_groups[0]["lr"], sync_dist=False)  # per step: the schedule
        return loss

    def on_validation_epoch_start(self) -> None:
        self._correct = self._total = 0

    def validation_step(self, batch, batch_idx):
        f, y = self.features(batch)
        self._correct += (self.head(f).argmax(1) == y).sum().item()
        self._total += y.numel()

    def on_validation_epoch_end(self) -> None:
        stats = torch.tensor([self._correct, self._total], dtype=torch.float64, device=self.device)
        if self.trainer.world_size > 1:
            stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
        top1 = 100.0 * float(stats[0]) / max(1.0, float(stats[1]))
        self.log("probe/top1", top1, sync_dist=False)
        if not self.trainer.sanity_checking:
            self.history.append({"epoch": self.current_epoch, "top1": top1})

    def configure_optimizers(self):
        return per_step_schedule(self.build_optimizer(), self.trainer, self.warmup_epochs)

    def build_optimizer(self) -> torch.optim.Optimizer:
        weights = [p for p in self.head.parameters() if p.ndim > 1]
        others = [p for p in self.head.parameters() if p.ndim <= 1]
        if self.opt_name == "lars":
            # MAE's LARS: trust ratio and decay on weight matrices only; timm skips the trust ratio at
            # weight decay 0 unless always_adapt, so the 2-D group asks for it explicitly.
            opt = Lars([{"params": weights, "always_adapt": True, "weight_decay": self.weight_decay},
                        {"params": others, "always_adapt": False, "weight_decay": 0.0}],
                       lr=self.lr, momentum=self.momentum, trust_coeff=0.001)
        elif self.opt_name == "sgd":
            opt = torch.optim.SGD([{"params": weights, "weight_decay": self.weight_decay},
                                   {"params": others, "weight_decay": 0.0}], lr=self.lr, momentum=self.momentum)
        else:
            opt = torch.optim.AdamW([{"params": weights, "weight_decay": self.weight_decay},
                                     {"params": others, "weight_decay": 0.0}], lr=self.lr)
        return opt
