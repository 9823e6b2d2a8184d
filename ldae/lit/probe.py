"""Linear probe on frozen features (PAPER.md 2.6, MAE's protocol).

Features: the frozen extractors of ldae.lit.features. Head: BatchNorm without affine (eps 1e-6) + Linear
(trunc-normal std 0.01). The head trains either on cached features (augmentation off)
or on features computed on the fly from augmented images by the frozen extractor.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from timm.layers import trunc_normal_
from timm.optim import Lars
from torch import nn

from ldae.lit.metrics import global_mean
from ldae.lit.schedules import per_step_schedule
from ldae.plan import scaled_lr

from ldae.choices import PROBE_OPTIMIZERS, check


def probe_head(feature_dim: int, num_classes: int, init_std: float | None = None) -> nn.Sequential:
    """The linear probe's head, (B, feature_dim) -> (B, num_classes) logits: BN(affine=False, eps 1e-6) + Linear.

    `init_std`: trunc-normal weights of that std and a zero bias (MAE's head, the final probe); None keeps
    torch's default Linear init (the online probe). Either way the head draws the random numbers it always did.
    """
    head = nn.Sequential(nn.BatchNorm1d(feature_dim, affine=False, eps=1e-6), nn.Linear(feature_dim, num_classes))
    if init_std is not None:
        trunc_normal_(head[1].weight, std=init_std)
        nn.init.zeros_(head[1].bias)
    return head


class LinearProbe(pl.LightningModule):
    """BN(affine=False) + Linear on features; `extractor` (frozen) turns images into features when given.

    The probe owns only the parameters it adds (the head); the extractor is frozen and in eval mode.
    """

    def __init__(self, feature_dim: int, num_classes: int, optimizer: str = "lars", base_lr: float = 0.1,
                 batch_size: int = 16384, momentum: float = 0.9, weight_decay: float = 0.0,
                 warmup_epochs: int = 10, extractor: nn.Module | None = None):
        super().__init__()
        check("probe.optimizer", optimizer, PROBE_OPTIMIZERS)
        self.head = probe_head(feature_dim, num_classes, init_std=0.01)
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
        top1 = global_mean(self.trainer, self._correct, self._total, self.device, scale=100.0)
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
