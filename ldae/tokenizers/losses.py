"""Autoencoder training losses (PAPER.md 2.2): reconstruction, KL, LPIPS perceptual, PatchGAN adversarial.

Written from the descriptions in the LDM / VQGAN / LPIPS papers, not from their code. Every term has a
weight; a term with weight 0 is neither computed nor logged (rows 02 and 03 of the trajectory are exactly
"perceptual weight 0" and then "adversarial weight 0"). `AutoencoderLoss.generator(...)` and
`.discriminator(...)` return `(loss, dict of named terms)`.

Scale of the terms: every term is per pixel value (the LDM objective divided by the number of pixel values
of an image), so LDM's weights carry over: KL 1e-6, perceptual 1.0, adversarial 0.5.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

RANDOM_BACKBONE_NOTE = "perceptual loss with random backbone (not the paper's)"


class LPIPS(nn.Module):
    """Learned perceptual distance on torchvision's VGG16 (relu1_2 ... relu5_3), one 1x1 linear map per layer.

    backbone_path: a torchvision `vgg16` state dict (keys `features.N.weight`, or the bare `N.weight`).
    linear_path: the five per-channel weight vectors, as keys `lins.K.weight` (ours) or `linK.model.1.weight`
        (the layout of the LPIPS authors' released `vgg.pth`); None: that released file as torchmetrics' wheel
        ships it (ldae/weights.py), so a real LPIPS needs only the VGG16 file. Nothing is ever downloaded.
    random_backbone: no backbone file (offline tests and small scales): a random VGG, uniform channel weights.
    """

    TAPS = (3, 8, 15, 22, 29)  # indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in vgg16.features
    WIDTHS = (64, 128, 256, 512, 512)

    def __init__(self, backbone_path: str | None = None, linear_path: str | None = None,
                 random_backbone: bool = False):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        from ldae.weights import lpips_linear_path

        if not random_backbone and not backbone_path:
            raise ValueError("LPIPS needs backbone_path (a local torchvision vgg16 state dict), or random_backbone=True")
        if backbone_path:
            linear_path = lpips_linear_path(linear_path)
            if linear_path is None:
                raise ValueError("LPIPS linear_path is null and torchmetrics ships no lpips_models/vgg.pth; "
                                 "set linear_path to the LPIPS heads file")
        # torchvision's VGG16 feature stack (the same layers and keys as vgg16().features), without
        # building the 120M-parameter classifier we never use.
        self.features = make_layers(cfgs["D"], batch_norm=False)[: self.TAPS[-1] + 1]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.WIDTHS)
        # Inputs in [-1, 1] are shifted/scaled to the ImageNet statistics the VGG was trained on.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale_in", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.random_backbone = bool(random_backbone) and not backbone_path
        if backbone_path:
            self._load(backbone_path, linear_path)
        else:
            for lin, c in zip(self.lins, self.WIDTHS):
                nn.init.constant_(lin.weight, 1.0 / c)
        self.requires_grad_(False)
        self.eval()

    def _load(self, backbone_path: str, linear_path: str) -> None:
        sd = torch.load(backbone_path, map_location="cpu", weights_only=True)
        sd = {k.removeprefix("features."): v for k, v in sd.items() if not k.startswith("classifier.")}
        own = self.features.state_dict()
        self.features.load_state_dict({k: sd[k] for k in own}, strict=True)
        lin = torch.load(linear_path, map_location="cpu", weights_only=True)
        for i, m in enumerate(self.lins):
            w = lin.get(f"lins.{i}.weight", lin.get(f"lin{i}.model.1.weight"))
            if w is None:
                raise ValueError(f"{linear_path} has no weights for LPIPS layer {i} (lins.{i}.weight)")
            with torch.no_grad():
                m.weight.copy_(w.view_as(m.weight))

    def train(self, mode: bool = True):
        return super().train(False)  # always frozen

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y (B, 3, H, W) in [-1, 1] -> distance (B,)."""
        h = torch.cat([x, y]).sub(self.shift).div(self.scale_in)  # (2B, 3, H, W)
        out = x.new_zeros(x.shape[0])
        k = 0
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i == self.TAPS[k]:
                a, b = h.chunk(2)
                a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # unit norm over channels
                b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                out = out + self.lins[k]((a - b).pow(2)).mean(dim=(1, 2, 3))  # (B,)
                k += 1
        return out


class PatchDiscriminator(nn.Module):
    """PatchGAN: strided 4x4 convolutions that score overlapping patches real or fake ((B, 1, h, w) logits)."""

    def __init__(self, channels: int = 64, layers: int = 3, in_channels: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = channels
        for i in range(1, layers + 1):
            c2 = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(c, c2, 4, stride, 1, bias=False), nn.BatchNorm2d(c2), nn.LeakyReLU(0.2, True)]
            c = c2
        mods.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def kl_per_value(mean: torch.Tensor, logvar: torch.Tensor, num_values: int) -> torch.Tensor:
    """KL[N(mean, exp(logvar)) | N(0, I)] summed over an image's latent, per pixel value, averaged over B."""
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(1).mean() / num_values


class AutoencoderLoss(nn.Module):
    def __init__(self, recon: str, kl_weight: float, perceptual: dict, adversarial: dict):
        """perceptual: {weight, backbone_path, linear_path, random_backbone}; adversarial: {weight, start, channels,
        layers}. A term at weight 0 is neither built nor computed, and needs no other key."""
        super().__init__()
        from ldae.choices import RECON_LOSSES, check

        check("tokenizer.recon_loss", recon, RECON_LOSSES)
        self.recon, self.kl_weight = recon, float(kl_weight)
        p, a = perceptual, adversarial
        self.perceptual_weight = float(p["weight"])
        self.lpips = None
        if self.perceptual_weight > 0:
            self.lpips = LPIPS(p["backbone_path"], p["linear_path"], bool(p["random_backbone"]))
            if self.lpips.random_backbone:
                log.warning("tokenizer: %s", RANDOM_BACKBONE_NOTE)
        self.adv_weight = float(a["weight"])
        self.disc, self.disc_start = None, None
        if self.adv_weight > 0:
            self.disc_start = int(a["start"])
            self.disc = PatchDiscriminator(int(a["channels"]), int(a["layers"]))

    @property
    def has_discriminator(self) -> bool:
        return self.disc is not None

    def disc_active(self, step: int) -> bool:
        return self.disc is not None and step >= self.disc_start

    @staticmethod
    def adaptive_weight(nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
        """Balance the adversarial gradient against the reconstruction gradient at the decoder's last layer."""
        g_nll = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
        g_adv = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
        return (g_nll.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4).detach()

    def generator(self, x: torch.Tensor, recon: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor | None,
                  step: int, last_layer: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """The autoencoder's loss on images x and reconstructions recon (B, 3, H, W); latent posterior (mean, logvar)."""
        terms: dict[str, torch.Tensor] = {}
        diff = recon - x
        rec = diff.abs().mean() if self.recon == "l1" else diff.pow(2).mean()
        terms["rec"] = rec.detach()
        nll = rec
        if self.lpips is not None:
            p = self.lpips(x, recon).mean()
            terms["perceptual"] = p.detach()
            nll = nll + self.perceptual_weight * p
        loss = nll
        if self.kl_weight > 0 and logvar is not None:
            kl = kl_per_value(mean, logvar, x[0].numel())
            terms["kl"] = kl.detach()
            loss = loss + self.kl_weight * kl
        if self.disc is not None:
            if self.disc_active(step):
                g = -self.disc(recon).mean()  # hinge generator loss
                w = self.adaptive_weight(nll, g, last_layer) if (last_layer is not None and self.training) \
                    else torch.ones((), device=x.device)
                loss = loss + self.adv_weight * w * g
                terms["adv_g"], terms["adv_weight"] = g.detach(), w
            else:  # before the delayed start the term exists but is zero
                terms["adv_g"] = torch.zeros((), device=x.device)
        terms["total"] = loss.detach()
        return loss, terms

    def discriminator(self, x: torch.Tensor, recon: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Hinge loss of the PatchGAN on real x and detached reconstructions."""
        real, fake = self.disc(x), self.disc(recon.detach())
        loss = 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())
        return loss, {"disc": loss.detach(), "logits_real": real.mean().detach(), "logits_fake": fake.mean().detach()}
