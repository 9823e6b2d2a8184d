"""Pretraining: tokenizer -> corruption -> [inverse tokenizer] -> DiT -> objective (DESIGN.md section 2)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from timm.utils import ModelEmaV3

from ldae.diffusion import Objective, build_schedule
from ldae.diffusion.noise import STREAM_EPS, STREAM_T, keyed_normal, keyed_uniform_int, sample_keys

STREAM_FLIP = 0x5EED0003  # the latent cache's flip and posterior sample: independent of t and ε
STREAM_POSTERIOR = 0x5EED0004
from ldae.lit.schedules import warmup_cosine
from ldae.models import build_backbone
from ldae.models.dit import DiT
from ldae.tokenizers import Tokenizer, build_tokenizer


def build_objective(cfg) -> Objective:
    t = cfg.target
    return Objective(predict=t.predict, input=t.input, lambda_t=t.lambda_t, residual_weight=t.residual_weight)


def backbone_io(cfg, tokenizer: Tokenizer, objective: Objective) -> dict:
    """Input/output geometry of the backbone: pixels (3 channels, patch p) or the latent map.

    A patch tokenizer's latent is (B, d, H/p, W/p), read with patch 1; the conv VAE's is (B, C, H/s, W/s),
    read with the DiT's own patch (latent_patch = p / s), d = C x latent_patch². Same token grid either way.
    """
    size, p = cfg.data.image_size, tokenizer.patch_size
    c, lp = tokenizer.latent_channels, tokenizer.latent_patch
    if objective.input == "image":
        io = {"input_size": size, "patch_size": p, "in_channels": 3}
    else:
        io = {"input_size": size // p * lp, "patch_size": lp, "in_channels": c}
    if objective.output_space == "image":
        io.update(out_channels=3, out_patch_size=p)
    else:
        io.update(out_channels=c, out_patch_size=lp)
    return io


def build_backbone_for(cfg, tokenizer: Tokenizer, objective: Objective, adaln_zero: bool | None = None) -> DiT:
    return build_backbone(cfg.model, num_classes=cfg.data.num_classes, adaln_zero=adaln_zero,
                          **backbone_io(cfg, tokenizer, objective))


class PretrainModule(pl.LightningModule):
    """Holds the (fitted, frozen) tokenizer, the backbone, its EMA, the schedule and the objective.

    `config` is the resolved run config as plain data; it is saved in every checkpoint (no OmegaConf
    objects, so `torch.load(weights_only=True)` works) and is all `ldae-probe` needs to rebuild the model.
    """

    def __init__(self, config: dict, tokenizer: Tokenizer | None = None):
        super().__init__()
        self.save_hyperparameters({"config": config})
        cfg = OmegaConf.create(config)
        self.cfg = cfg
        self.tokenizer = tokenizer if tokenizer is not None else build_tokenizer(cfg.tokenizer)
        self.tokenizer.requires_grad_(False)
        self.objective = build_objective(cfg)
        self.schedule = build_schedule(cfg.schedule.name, cfg.schedule.num_steps)
        self.backbone = build_backbone_for(cfg, self.tokenizer, self.objective)
        self.ema = None
        if cfg.optim.ema:
            self.ema = ModelEmaV3(self.backbone, decay=cfg.optim.ema_decay, use_warmup=cfg.optim.ema_warmup)
            self.ema.requires_grad_(False)
        self.class_cond = bool(cfg.model.class_cond)
        self.lr = None  # the absolute lr, set in configure_optimizers (logged)
        self._loss_sum, self._loss_n = 0.0, 0
        self.last_epoch_loss: float | None = None  # mean training loss of the last epoch (results.json)

    # --- the path of one batch ---------------------------------------------------------------------
    @torch.no_grad()
    def corrupt(self, x: torch.Tensor | None, index: torch.Tensor, epoch: int, z0: torch.Tensor | None = None):
        """Encode, draw t and ε keyed on (seed, epoch, index), corrupt. Returns z0, eps, t, network input."""
        if z0 is None:
            z0 = self.tokenizer.encode(x)  # (B, d, h, w)
        keys = sample_keys(int(self.cfg.seed), epoch, index)
        t = keyed_uniform_int(keys, 1, self.schedule.num_steps + 1, STREAM_T)  # (B,) in 1..T
        eps = keyed_normal(keys, tuple(z0.shape[1:]), STREAM_EPS, dtype=z0.dtype)  # (B, d, h, w)
        z_t = self.schedule.corrupt(z0, eps, t)
        return z0, eps, t, self.objective.network_input(z_t, self.tokenizer)

    @torch.no_grad()
    def latents_from_cache(self, mean: torch.Tensor, logvar: torch.Tensor, index: torch.Tensor, epoch: int):
        """A cached posterior (B, 2 flips, C, h, w) -> z0: the flip (when data.hflip) and the posterior sample
        drawn keyed on (seed, epoch, index), then the tokenizer's latent normalisation."""
        keys = sample_keys(int(self.cfg.seed), epoch, index)
        flip = keyed_uniform_int(keys, 0, 2, STREAM_FLIP) if self.cfg.data.hflip else torch.zeros_like(index)
        rows = torch.arange(mean.shape[0], device=mean.device)
        m, lv = mean[rows, flip], logvar[rows, flip]  # (B, C, h, w)
        if self.tokenizer.posterior_mode == "sample":
            m = m + (0.5 * lv).exp() * keyed_normal(keys, tuple(m.shape[1:]), STREAM_POSTERIOR, dtype=m.dtype)
        return self.tokenizer.norm(m)

    def training_step(self, batch, batch_idx):
        if len(batch) == 4:  # the latent cache: (mean, logvar, y, index), no image
            mean, logvar, y, index = batch
            x, z0 = None, self.latents_from_cache(mean, logvar, index, self.current_epoch)
        else:
            (x, y, index), z0 = batch, None
        z0, eps, t, inp = self.corrupt(x, index, self.current_epoch, z0)
        pred = self.backbone(inp, t, y if self.class_cond else None)
        loss, terms = self.objective(pred, x, z0, eps, self.schedule.gamma[t], self.schedule.sigma[t], self.tokenizer)
        # sync_dist all-reduces: the logged loss is the global mean on any number of devices.
        self.log("pretrain/loss", loss, prog_bar=True, sync_dist=True)
        self.log_dict({f"pretrain/{k}": v for k, v in terms.items()}, sync_dist=True)
        self._loss_sum += float(loss.detach())
        self._loss_n += 1
        return loss

    def on_train_epoch_start(self) -> None:
        self._loss_sum, self._loss_n = 0.0, 0

    def on_train_epoch_end(self) -> None:
        stats = torch.tensor([self._loss_sum, self._loss_n], dtype=torch.float64, device=self.device)
        if self.trainer.world_size > 1:
            stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
        self.last_epoch_loss = float(stats[0] / stats[1].clamp_min(1))

    def validation_step(self, batch, batch_idx):
        x, y, index = batch
        z0, eps, t, inp = self.corrupt(x, index, 0)  # the same noise every epoch: comparable curves
        net = self.ema.module if self.ema is not None else self.backbone
        pred = net(inp, t, y if self.class_cond else None)
        loss, _ = self.objective(pred, x, z0, eps, self.schedule.gamma[t], self.schedule.sigma[t], self.tokenizer)
        self.log("pretrain/val_loss", loss, sync_dist=True)

    # --- optimisation ------------------------------------------------------------------------------
    def configure_optimizers(self):
        o = self.cfg.optim
        world = self.trainer.world_size if self.trainer is not None else 1
        accum = self.trainer.accumulate_grad_batches if self.trainer is not None else 1
        # The effective batch is what one optimiser step sees: it equals data.batch_size by construction.
        effective = self.cfg.data.batch_size
        self.lr = o.base_lr * effective / 256
        opt = torch.optim.AdamW(self.backbone.parameters(), lr=self.lr, betas=tuple(o.betas),
                                weight_decay=o.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = max(1, total // max(1, self.trainer.max_epochs))
        sched = warmup_cosine(opt, int(o.warmup_epochs * steps_per_epoch), total,
                              min_ratio=o.min_lr / self.lr if self.lr > 0 else 0.0)
        self._opt_info = {"lr": self.lr, "base_lr": o.base_lr, "effective_batch": effective,
                          "world_size": world, "accumulate_grad_batches": accum}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_start(self) -> None:
        for k, v in self._opt_info.items():
            self.log(f"pretrain/{k}", float(v), sync_dist=False, rank_zero_only=True)

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:  # once per real optimiser step (not per accumulated micro-batch)
            self.ema.update(self.backbone, step=self.global_step)

    def encoder(self, use_ema: bool = True) -> DiT:
        """The network the probe reads: the EMA weights when there are any."""
        return self.ema.module if (use_ema and self.ema is not None) else self.backbone
