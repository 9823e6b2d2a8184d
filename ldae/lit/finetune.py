"""End-to-end fine-tuning (PAPER.md 2.7 / App. B, "closely followed MAE's protocol").

The network is the encoder (blocks up to the split, or probe.block) folded at the fixed t into a timm
VisionTransformer (ldae.models.timm_vit; PAPER.md 2.4: with t fixed the t-MLPs are constants), global-average-pooled,
with a linear head; its input is the clean network input (the projected image for PCA rows). All of App. B's
recipe comes from timm: AdamW with layer-wise lr decay (create_optimizer_v2), drop path (the ViT's
drop_path_rate), RandAugment + RandomResizedCrop + flip + random erasing (create_transform, as MAE builds it),
MixUp/CutMix with label smoothing (Mixup + SoftTargetCrossEntropy) and an EMA of the weights (ModelEmaV3).
The stage that builds and trains it is ldae.evaluation.finetune_stage.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from timm.data import Mixup, create_transform
from timm.layers import trunc_normal_
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ldae.lit.metrics import global_mean
from ldae.lit.schedules import per_step_schedule
from ldae.plan import scaled_lr


class AugmentedView(Dataset):
    """(x in [-1, 1], y, i) -> the same image through a PIL transform (timm's), back in [-1, 1]."""

    def __init__(self, base: Dataset, transform):
        self.base, self.transform = base, transform
        self.to_pil = v2.ToPILImage()

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y, idx = self.base[i]
        img = self.to_pil(((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))  # (3, H, W) -> PIL
        return self.transform(img), y, idx  # create_transform normalises with mean = std = 0.5: [-1, 1]


def _posterize_zero_bits_as_black() -> None:
    """timm's RandAugment asks Posterize to keep 0 bits at magnitude 10 (a black image with Pillow < 13);
    Pillow 13 raises on 0 bits instead. Restore the old result so that RandAugment's distribution is unchanged."""
    from PIL import Image, ImageOps
    from timm.data import auto_augment as aa

    def posterize(img, bits_to_keep, **kw):
        return Image.new(img.mode, img.size) if bits_to_keep <= 0 else aa.posterize(img, bits_to_keep, **kw)

    try:
        ImageOps.posterize(Image.new("RGB", (1, 1)), 0)
    except ValueError:
        for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
            aa.NAME_TO_OP[name] = posterize


def train_transform(pr: DictConfig, image_size: int):
    """MAE's fine-tuning transform (timm create_transform): RRC + flip + RandAugment + random erasing."""
    _posterize_zero_bits_as_black()
    return create_transform(input_size=image_size, is_training=True, scale=(float(pr.crop_min_scale), 1.0),
                            auto_augment=pr.rand_augment or None, interpolation="bicubic", re_prob=float(pr.reprob),
                            re_mode="pixel", re_count=1, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class FineTuneModule(pl.LightningModule):
    """The folded encoder (a timm ViT with a head) trained end to end; the frozen tokenizer makes its input."""

    def __init__(self, vit: nn.Module, to_input, num_classes: int, pr: DictConfig, effective_batch: int):
        super().__init__()
        self.model, self.to_input, self.pr = vit, to_input, pr
        trunc_normal_(self.model.head.weight, std=2e-5)  # MAE's head init
        nn.init.zeros_(self.model.head.bias)
        self.mixup = None
        if pr.mixup > 0 or pr.cutmix > 0:
            self.mixup = Mixup(mixup_alpha=float(pr.mixup), cutmix_alpha=float(pr.cutmix),
                               label_smoothing=float(pr.label_smoothing), num_classes=num_classes)
            self.train_loss = SoftTargetCrossEntropy()
        elif pr.label_smoothing > 0:
            self.train_loss = LabelSmoothingCrossEntropy(float(pr.label_smoothing))
        else:
            self.train_loss = nn.CrossEntropyLoss()
        self.ema = ModelEmaV3(self.model, decay=float(pr.ema_decay)) if pr.ema else None
        if self.ema is not None:
            self.ema.requires_grad_(False)
        self.effective_batch = effective_batch
        self.lr = scaled_lr(float(pr.base_lr), effective_batch)  # BASE lr x batch / 256 (App. B: 1e-3 -> 4e-3 at 1024)
        self._counts: dict[str, list[int]] = {}
        self.history: list[dict] = []
        self.train_samples, self.train_seconds, self._t0 = 0, 0.0, 0.0

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        if self.mixup is not None:
            x, y = self.mixup(x, y)  # (B, 3, H, W), soft targets (B, C)
        loss = self.train_loss(self.model(self.to_input(x)), y)
        self.train_samples += x.shape[0]
        self.log("finetune/loss", loss, prog_bar=True, sync_dist=True)
        self.log("finetune/lr", max(g["lr"] for g in self.optimizers().param_groups))  # the un-decayed top layers
        return loss

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def on_train_epoch_start(self) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        self.train_seconds += time.perf_counter() - self._t0

    def _nets(self) -> dict[str, nn.Module]:
        """The networks validated: the trained one, and its EMA when there is one."""
        return {"model": self.model, **({"ema": self.ema.module} if self.ema is not None else {})}

    def on_validation_epoch_start(self) -> None:
        self._counts = {name: [0, 0] for name in self._nets()}  # name -> [correct, seen]

    def validation_step(self, batch, batch_idx):
        x, y, _ = batch
        inp = self.to_input(x)
        for name, net in self._nets().items():
            self._counts[name][0] += int((net(inp).argmax(1) == y).sum())
            self._counts[name][1] += y.numel()

    def on_validation_epoch_end(self) -> None:
        top = {k: global_mean(self.trainer, c, n, self.device, scale=100.0) for k, (c, n) in self._counts.items()}
        self.log("finetune/top1", top["model"])
        if "ema" in top:
            self.log("finetune/ema_top1", top["ema"])
        if not self.trainer.sanity_checking:
            self.history.append({"epoch": self.current_epoch, **{f"{k}_top1": v for k, v in top.items()}})

    def configure_optimizers(self):
        return per_step_schedule(self.build_optimizer(), self.trainer, self.pr.warmup_epochs,
                                 min_ratio=float(self.pr.min_lr) / self.lr)

    def build_optimizer(self) -> torch.optim.Optimizer:
        pr = self.pr
        # Layer-wise lr decay: timm puts each block in its own group with lr_scale = decay^(depth - layer).
        opt = create_optimizer_v2(self.model, opt="adamw", lr=self.lr, weight_decay=float(pr.weight_decay),
                                  layer_decay=float(pr.layer_decay), betas=(0.9, 0.999))
        for g in opt.param_groups:  # torch schedulers ignore timm's lr_scale: bake it into each group's lr
            g["lr"] = self.lr * g.get("lr_scale", 1.0)
        return opt
