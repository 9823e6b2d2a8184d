"""Pretraining: tokenizer -> corruption -> [inverse tokenizer] -> DiT -> objective (DESIGN.md section 2)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from timm.utils import ModelEmaV3

from ldae.data.batch import LatentBatch
from ldae.diffusion.objectives import Objective
from ldae.diffusion.schedules import schedule_from_config
from ldae.ops.noise import (STREAM_EPS, STREAM_FLIP, STREAM_POSTERIOR, STREAM_T, keyed_normal,  # noqa: F401
                                  keyed_uniform_int, sample_keys)
from ldae.lit.checkpointing import rng_states, set_rng_states
from ldae.lit.metrics import global_mean
from ldae.lit.schedules import warmup_cosine
from ldae.plan import Geometry, geometry, pretrain_batches
from ldae.models import build_backbone
from ldae.models.dit import DiT
from ldae.speed import adamw_kwargs, prepare_backbone, prepare_tokenizer, set_tf32, speed_of
from ldae.tokenizers import Tokenizer, build_tokenizer


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf (optim.on_nonfinite=stop)."""


def _plain(x):
    """JSON-like data only (checkpoints load with weights_only=True)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x if isinstance(x, (str, int, float, bool)) or x is None else str(x)


def build_objective(cfg) -> Objective:
    t = cfg.target
    return Objective(predict=t.predict, input=t.input, lambda_t=t.lambda_t, residual_weight=t.residual_weight,
                     output_basis=t.output_basis)


def build_backbone_for(cfg, geometry: Geometry, adaln_zero: bool | None = None) -> DiT:
    """The backbone of the run config `cfg` with the plan's geometry (ldae.plan.geometry)."""
    return build_backbone(cfg.model, num_classes=cfg.data.num_classes, adaln_zero=adaln_zero,
                          **geometry.backbone.io())


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
        self.speed = speed_of(cfg)
        prepare_tokenizer(self.tokenizer, self.speed)
        self.objective = build_objective(cfg)
        self.schedule = schedule_from_config(cfg.schedule)
        self.geometry = geometry(cfg, self.tokenizer)  # the run plan's, from the built tokenizer
        self.backbone = build_backbone_for(cfg, self.geometry)
        self.ema = None
        if cfg.optim.ema:
            self.ema = ModelEmaV3(self.backbone, decay=cfg.optim.ema_decay, use_warmup=cfg.optim.ema_warmup,
                                  foreach=self.speed["ema_foreach"])
            self.ema.requires_grad_(False)
        prepare_backbone(self.backbone, self.speed)  # after the EMA copy: only the trained network compiles
        self.class_cond = bool(cfg.model.class_cond)
        self.lr = None  # the absolute lr, set in configure_optimizers (logged)
        self._loss_sum, self._loss_n = 0.0, 0
        self.last_epoch_loss: float | None = None  # mean training loss of the last epoch (results.json)
        self.last_val_loss: float | None = None  # the last validation loss (checkpointed; results.json)
        self.tokenizer_record: dict = {}  # the tokenizer artifact (key, path), referenced from checkpoints
        self.skipped_steps = 0  # non-finite losses skipped (optim.on_nonfinite=skip)

    @classmethod
    def from_config(cls, cfg, tokenizer: Tokenizer | None = None) -> "PretrainModule":
        """From a composed run config (OmegaConf), resolved to the plain data that checkpoints store."""
        return cls(OmegaConf.to_container(cfg, resolve=True), tokenizer)

    # --- the path of one batch ---------------------------------------------------------------------
    @torch.no_grad()
    def corrupt(self, x: torch.Tensor | None, index: torch.Tensor, epoch: int, z0: torch.Tensor | None = None):
        """Encode, draw t and ε keyed on (seed, epoch, index), corrupt. Returns z0, eps, t, network input."""
        keys = sample_keys(int(self.cfg.seed), epoch, index)
        if z0 is None:
            z0 = self.tokenizer.encode_keyed(x, keys)  # (B, d, h, w); a posterior sample keyed like ε
        t = keyed_uniform_int(keys, 1, self.schedule.num_steps + 1, STREAM_T)  # (B,) in 1..T
        eps = keyed_normal(keys, tuple(z0.shape[1:]), STREAM_EPS, dtype=z0.dtype)  # (B, d, h, w)
        z_t = self.schedule.corrupt(z0, eps, t)
        return z0, eps, t, self.objective.network_input(z_t, self.tokenizer)

    def loss(self, pred, x, z0, eps, t) -> tuple[torch.Tensor, dict]:
        """The objective on the network output; a learned-σ output (2C channels) adds the bound term."""
        kw = {}
        if self.backbone.learn_sigma:
            pred, var_out = pred.chunk(2, dim=1)  # (B, C, ...) mean and variance halves
            kw = dict(var_out=var_out, z_t=self.schedule.corrupt(z0, eps, t), t=t, schedule=self.schedule)
        return self.objective(pred, x, z0, eps, self.schedule.gamma[t], self.schedule.sigma[t], self.tokenizer, **kw)

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

    def step_loss(self, batch, epoch: int) -> tuple[torch.Tensor, dict]:
        """The whole pretraining path of one batch (encode, corrupt, backbone, objective); bench.py times it."""
        if isinstance(batch, LatentBatch):  # the latent cache: no image
            x, y, index = None, batch.y, batch.index
            z0 = self.latents_from_cache(batch.mean, batch.logvar, index, epoch)
        else:
            (x, y, index), z0 = batch, None
        z0, eps, t, inp = self.corrupt(x, index, epoch, z0)
        pred = self.objective.prediction(self.backbone(inp, t, y if self.class_cond else None), self.tokenizer)
        return self.loss(pred, x, z0, eps, t)

    def setup(self, stage: str) -> None:
        set_tf32(self.speed["tf32"])

    def training_step(self, batch, batch_idx):
        loss, terms = self.step_loss(batch, self.current_epoch)
        if not self._all_finite(loss):
            return self._nonfinite(loss)
        # sync_dist all-reduces: the logged loss is the global mean on any number of devices.
        self.log("pretrain/loss", loss, prog_bar=True, sync_dist=True)
        self.log_dict({f"pretrain/{k}": v for k, v in terms.items()}, sync_dist=True)
        self._loss_sum += float(loss.detach())
        self._loss_n += 1
        return loss

    def _all_finite(self, loss: torch.Tensor) -> bool:
        """One answer on every rank (a rank that skipped alone would deadlock the gradient all-reduce)."""
        bad = (~torch.isfinite(loss.detach())).float()
        if self.trainer is not None and self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")
        return bool(bad == 0)

    def _nonfinite(self, loss: torch.Tensor):
        where = f"step {self.global_step} (epoch {self.current_epoch})"
        if self.cfg.optim.on_nonfinite == "skip":
            self.skipped_steps += 1
            self.log("pretrain/skipped_steps", float(self.skipped_steps))
            return None  # Lightning skips the optimiser step
        raise NonFiniteLossError(
            f"non-finite loss ({float(loss)}) at {where}; the last good checkpoint is kept. Lower optim.base_lr, "
            f"set optim.gradient_clip, or set optim.on_nonfinite=skip")

    # --- checkpoint contents beyond Lightning's (model, EMA, optimizer, scheduler, loops, loader position) ---
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The epoch and validation losses too: a run resumed from its final checkpoint trains no further
        # epoch, and results.json still reports them.
        val = self.trainer.callback_metrics.get("pretrain/val_loss") if self._trainer is not None else None
        self.last_val_loss = float(val) if val is not None else self.last_val_loss
        checkpoint["ldae"] = {"rng": rng_states(), "loss_sum": self._loss_sum, "loss_n": self._loss_n,
                              "skipped_steps": self.skipped_steps, "tokenizer": _plain(self.tokenizer_record),
                              "last_epoch_loss": self.last_epoch_loss, "last_val_loss": self.last_val_loss}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("ldae")
        if state:
            set_rng_states(state["rng"])
            self._loss_sum, self._loss_n = state["loss_sum"], state["loss_n"]
            self.skipped_steps = state.get("skipped_steps", 0)
            self.last_epoch_loss = state.get("last_epoch_loss")
            self.last_val_loss = state.get("last_val_loss")

    def on_train_epoch_start(self) -> None:
        # Lightning does not call this when it resumes mid-epoch, so the restored partial sums survive.
        self._loss_sum, self._loss_n = 0.0, 0

    def on_train_epoch_end(self) -> None:
        self.last_epoch_loss = global_mean(self.trainer, self._loss_sum, self._loss_n, self.device)

    def validation_step(self, batch, batch_idx):
        x, y, index = batch
        z0, eps, t, inp = self.corrupt(x, index, 0)  # the same noise every epoch: comparable curves
        net = self.ema.module if self.ema is not None else self.backbone
        pred = self.objective.prediction(net(inp, t, y if self.class_cond else None), self.tokenizer)
        loss, _ = self.loss(pred, x, z0, eps, t)
        self.log("pretrain/val_loss", loss, sync_dist=True)

    # --- optimisation ------------------------------------------------------------------------------
    def configure_optimizers(self):
        o = self.cfg.optim
        # The effective batch is what one optimiser step sees: it equals data.batch_size by construction.
        b = pretrain_batches(self.cfg)
        self.lr = b.lr
        on_cuda = next(self.backbone.parameters()).is_cuda
        opt = torch.optim.AdamW(self.backbone.parameters(), lr=self.lr, betas=tuple(o.betas),
                                weight_decay=o.weight_decay, **adamw_kwargs(self.speed, on_cuda))
        # Counted here, not with trainer.estimated_stepping_batches: that builds the train loader before the
        # checkpoint is restored, so a mid-epoch resume would lose the loader position.
        steps_per_epoch = max(1, len(self.trainer.datamodule.train_dataloader()) // b.accumulate)
        total = steps_per_epoch * self.trainer.max_epochs
        sched = warmup_cosine(opt, int(o.warmup_epochs * steps_per_epoch), total,
                              min_ratio=o.min_lr / self.lr if self.lr > 0 else 0.0)
        self._opt_info = {"lr": b.lr, "base_lr": b.base_lr, "effective_batch": b.effective,
                          "world_size": b.world_size, "accumulate_grad_batches": b.accumulate,
                          "device_batch": b.per_device}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_start(self) -> None:
        for k, v in self._opt_info.items():
            self.log(f"pretrain/{k}", float(v), sync_dist=True)  # the same on every rank: the mean is the value

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:  # once per real optimiser step (not per accumulated micro-batch)
            self.ema.update(self.backbone, step=self.global_step)

    def encoder(self, use_ema: bool = True) -> DiT:
        """The network the probe reads: the EMA weights when there are any."""
        return self.ema.module if (use_ema and self.ema is not None) else self.backbone
