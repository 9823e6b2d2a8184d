"""Online linear probe during pretraining: a curve of representation quality on the dashboards.

A BN(affine=False) + Linear head, with its own AdamW, reads the live backbone's encoder features of the
clean input at a fixed t (detached, no_grad, the backbone briefly in eval mode, the null class) and takes one
step per training batch. It logs `online_probe/loss` while training and `online_probe/top1` at each
validation. It changes nothing in pretraining: no gradient reaches the backbone, it draws no random numbers
(the probe input is clean and the class is the null one), and its parameters live outside the LightningModule
(tests/integration/test_eval_e2e.py checks equal backbone weights with and without it). Its head and optimizer are
saved in checkpoints (Callback state), so a resumed run continues the same curve.
"""

from __future__ import annotations

import torch
from pytorch_lightning.callbacks import Callback
from torch import nn

from ldae.data.batch import LatentBatch
from ldae.lit.features import clean_network_input
from ldae.lit.metrics import global_mean
from ldae.lit.probe import probe_head


class OnlineProbe(Callback):
    def __init__(self, feature_dim: int, num_classes: int, t: int = 10, lr: float = 1e-3,
                 clean_input: str = "projected"):
        super().__init__()
        self.t, self.clean_input = t, clean_input
        self.head = probe_head(feature_dim, num_classes)  # torch's default Linear init
        self.opt = torch.optim.AdamW(self.head.parameters(), lr=lr, weight_decay=0.0)  # ABSOLUTE lr
        self._correct = self._total = 0

    @classmethod
    def from_config(cls, cfg, module) -> "OnlineProbe":
        op = cfg.online_probe
        return cls(module.backbone.hidden_size, int(cfg.data.num_classes), int(op.t), float(op.lr),
                   cfg.probe.clean_input)

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.head.to(pl_module.device)

    @torch.no_grad()
    def _features(self, pl_module, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, LatentBatch):  # the latent cache: the clean latent is the network input
            y = batch.y
            inp = pl_module.latents_from_cache(batch.mean, batch.logvar, batch.index, pl_module.current_epoch)
        else:
            x, y, _ = batch
            inp = clean_network_input(x, pl_module.tokenizer, pl_module.objective, self.clean_input)
        backbone = pl_module.backbone
        was = backbone.training
        backbone.eval()
        t = torch.full((inp.shape[0],), self.t, device=inp.device, dtype=torch.long)
        f = backbone.forward_features(inp, t, None)  # (B, D)
        backbone.train(was)
        return f.float(), y

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        f, y = self._features(pl_module, batch)
        self.head.train()
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(self.head(f), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
        if trainer.world_size > 1:  # one head on every rank: average its gradients
            for p in self.head.parameters():
                p.grad = trainer.strategy.reduce(p.grad, reduce_op="mean")
        self.opt.step()
        pl_module.log("online_probe/loss", loss.detach(), sync_dist=True)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._correct = self._total = 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        f, y = self._features(pl_module, batch)
        self.head.eval()
        with torch.no_grad():
            self._correct += int((self.head(f).argmax(1) == y).sum())
        self._total += y.numel()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        top1 = global_mean(trainer, self._correct, self._total, pl_module.device, scale=100.0)
        pl_module.log("online_probe/top1", top1, sync_dist=False)

    def state_dict(self) -> dict:
        return {"head": self.head.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.head.load_state_dict(state_dict["head"])
        self.opt.load_state_dict(state_dict["opt"])
