"""Training a tokenizer with Lightning manual optimisation: the autoencoder (generator) and, when the
adversarial weight is non-zero, the PatchGAN discriminator, each with its own optimizer. `fit_trainable` is the
whole fit of a gradient-trained tokenizer (ldae.tokenizers.trainable), called by the fit stage.

Metrics: `tokenizer/<term>` for every term the loss returns (a term at weight 0 is absent).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pytorch_lightning as pl
import torch


class TokenizerTrainModule(pl.LightningModule):
    def __init__(self, tokenizer, steps: int, lr: float, betas, disc_lr: float | None, weight_decay: float):
        """disc_lr: the discriminator's lr (null: lr)."""
        super().__init__()
        self.automatic_optimization = False
        self.tok = tokenizer
        self.loss_fn = tokenizer.make_loss()
        self.steps, self.lr, self.betas = int(steps), float(lr), tuple(betas)
        self.disc_lr = float(disc_lr if disc_lr is not None else lr)
        self.weight_decay = float(weight_decay)
        self.step_count = 0
        self.history: list[dict] = []

    def configure_optimizers(self):
        gen = [p for p in self.tok.trainable_parameters() if p.requires_grad]
        opt_g = torch.optim.AdamW(gen, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        if not self.loss_fn.has_discriminator:
            return opt_g
        opt_d = torch.optim.AdamW(self.loss_fn.disc.parameters(), lr=self.disc_lr, betas=self.betas, weight_decay=0.0)
        return [opt_g, opt_d]

    def on_train_batch_start(self, batch, batch_idx):
        if self.step_count >= self.steps:
            return -1  # the step budget is spent: end the epoch (and, being the last epoch, the fit)

    def training_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        opts = self.optimizers()
        opt_g, opt_d = (opts[0], opts[1]) if isinstance(opts, (list, tuple)) else (opts, None)
        recon, mean, logvar = self.tok.reconstruct_for_training(x)
        loss, terms = self.loss_fn.generator(x, recon, mean, logvar, self.step_count, self.tok.last_layer())
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_g.step()
        if opt_d is not None and self.loss_fn.disc_active(self.step_count):
            d_loss, d_terms = self.loss_fn.discriminator(x, recon.detach())
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()
            terms.update(d_terms)
        self.step_count += 1
        self.log_dict({f"tokenizer/{k}": v for k, v in terms.items()}, prog_bar=False)
        self.history.append({k: float(v) for k, v in terms.items()})


def train_tokenizer(tokenizer, loader, steps: int, logger=None) -> list[dict]:
    """Train `tokenizer` for `steps` optimizer steps over `loader` (re-iterated as needed); returns the per-step terms."""
    tc = tokenizer.train_cfg
    module = TokenizerTrainModule(tokenizer, steps, lr=tc["lr"], betas=tc["betas"], disc_lr=tc["disc_lr"],
                                  weight_decay=tc["weight_decay"])
    per_epoch = max(1, len(loader)) if hasattr(loader, "__len__") else steps
    trainer = pl.Trainer(max_epochs=math.ceil(steps / per_epoch), accelerator=tc["accelerator"], devices=1,
                         logger=logger if logger is not None else False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         log_every_n_steps=max(1, min(50, steps // 10)), precision=tc["precision"])
    was = tokenizer.training
    tokenizer.train()
    trainer.fit(module, loader)
    tokenizer.train(was)
    tokenizer.cpu()
    module.loss_fn = None  # the discriminator and LPIPS are not part of the artifact
    return module.history


def fit_trainable(tokenizer, batches: Iterable, logger=None) -> dict:
    """Fit a gradient-trained tokenizer on `batches` (a re-iterable loader of (x, ...) or x): its preparation
    (e.g. public weights, which set the step budget to 0), `train_cfg["steps"]` optimizer steps, then the latent
    normalisation measured on data. `logger` takes the training curves. Returns the fit statistics."""
    stats = tokenizer.prepare()
    steps = int(tokenizer.train_cfg["steps"])
    if steps > 0:
        tokenizer.history = train_tokenizer(tokenizer, batches, steps, logger=logger)
        stats.update(train_steps=len(tokenizer.history), loss_first=tokenizer.history[0]["total"],
                     loss_last=tokenizer.history[-1]["total"], loss_terms=sorted(tokenizer.history[-1]))
    stats.update(tokenizer.measure_norm(batches))
    tokenizer.fitted.fill_(True)
    return stats
