"""Pictures of a run, saved as PNGs under RUN/pictures/ (and logged to wandb by the caller when it is on):

    denoise_step{N}.png   clean / noised / denoised validation images during pretraining (DenoisingPanels);
                          column j at noise level t_j, spread over 1..T; the prediction mapped back to
                          pixels the way the objective reads it (ε and x0: through x̂0 and the decoder; image: as is)
    pca_bases.png         the top principal components of the patch PCA as image filters (paper Fig. 4)
    latent_noise.png      one image with noise z0 + σ ε added in the latent, decoded to pixels (paper Fig. 7)
    probe_<tag>.png       the probe's accuracy curve (validation top-1 per evaluated epoch)
RUN/tokenizer_recon.png and RUN/samples.png (the DiT rows) are written by their stages.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.nn import functional as F

from ldae.diffusion.sampling import Denoiser

MIN_PX = 64  # small images (smoke: 16 px) and PCA filters (p px) are upsampled (nearest) to at least this size


def _upsample(images: torch.Tensor, min_px: int = MIN_PX) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, kH, kW) with the smallest integer k that reaches min_px: pixels stay square."""
    k = -(-min_px // images.shape[-1])
    return F.interpolate(images, scale_factor=k, mode="nearest") if k > 1 else images


def _grid(images: torch.Tensor, path: Path, nrow: int) -> Path:
    """Images in [-1, 1] (N, 3, H, W) -> a PNG grid."""
    from torchvision.utils import save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    images = _upsample(images.detach().float().cpu().clamp(-1, 1))
    save_image((images + 1) / 2, str(path), nrow=nrow, padding=2, pad_value=1.0)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------------ denoising panels

@torch.no_grad()
def denoise_panel(module, x: torch.Tensor, y: torch.Tensor | None = None, seed: int = 0):
    """(clean, noised, denoised) pixel images (B, 3, H, W) for the PretrainModule `module`: image i is
    noised at t_i (the midpoints of b equal bins of 1..T) with noise from `seed`, and denoised by the EMA backbone."""
    tok, sch, obj = module.tokenizer, module.schedule, module.objective
    net = module.encoder(use_ema=True)
    was = net.training
    net.eval()
    b = x.shape[0]
    # (B,), low to high noise: midpoints of B equal bins of 1..T (t = T can hold no signal: γ_T = 0 in linear γ²)
    t = ((torch.arange(b) + 0.5) / b * sch.num_steps).round().long().clamp(1, sch.num_steps).to(x.device)
    z0 = tok.encode(x)  # (B, C, h, w)
    g = torch.Generator().manual_seed(int(seed))
    eps = torch.randn(z0.shape, generator=g).to(z0)
    z_t = sch.corrupt(z0, eps, t)
    mean, _ = Denoiser(net, obj, sch, tok).raw(z_t, t, y if module.class_cond else None)
    if obj.output_space == "image":
        denoised = mean  # (B, 3, H, W): the image the loss compares with x0
    else:
        z0_hat = obj.spec.to_x0(mean, z_t, t, sch, tok)  # (B, C, h, w)
        denoised = tok.decode(z0_hat)
    net.train(was)
    return x, tok.decode(z_t), denoised


class DenoisingPanels(pl.Callback):
    """Every `every_n_steps` optimiser steps, and once when training ends: RUN/pictures/denoise_step{N}.png
    (rows: clean, noised, denoised), logged to wandb as `pictures/denoise`. Rank zero only."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, out: Path, every_n_steps: int | None, seed: int = 0):
        self.images, self.labels, self.out = images, labels, Path(out)
        self.every, self.seed = every_n_steps, seed
        self._last: int | None = None
        self.paths: list[Path] = []

    def _draw(self, trainer: pl.Trainer, module) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step == self._last:
            return
        self._last = step
        x, y = self.images.to(module.device), self.labels.to(module.device)
        clean, noised, denoised = denoise_panel(module, x, y, self.seed)
        path = _grid(torch.cat([clean, noised, denoised]), self.out / f"denoise_step{step:06d}.png", nrow=x.shape[0])
        self.paths.append(path)
        from ldae.wandb_logger import log_pictures

        log_pictures(trainer.loggers, {"pictures/denoise": path}, step=step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every and step > 0 and step % int(self.every) == 0:
            self._draw(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._draw(trainer, pl_module)


def panel_images(dataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n images (n, 3, H, W) and labels of a (image, label, index) dataset: the same every time."""
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    return torch.stack([it[0] for it in items]), torch.as_tensor([int(it[1]) for it in items])


# ------------------------------------------------------------------------------------ tokenizer pictures

@torch.no_grad()
def pca_bases(tokenizer, path: Path, k: int = 16) -> Path | None:
    """The top-k PCA directions (columns of the basis) as (3, p, p) filters, each scaled symmetrically
    (0 is mid-gray), in one row-major grid: the paper's Fig. 4. None for tokenizers without a PCA basis."""
    from ldae.tokenizers.pca import PatchPCA

    if not isinstance(tokenizer, PatchPCA):
        return None
    k = max(1, min(int(k), tokenizer.patch_dim))
    comps = tokenizer.basis()[:, :k].T.float().cpu()  # (k, D), descending variance
    filters = tokenizer.unpatchify(comps.unsqueeze(1), (1, 1))  # (k, 3, p, p)
    amp = filters.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return _grid(filters / amp, path, nrow=min(k, 8))  # each filter in [-1, 1]: 0 is mid-gray


@torch.no_grad()
def latent_noise(tokenizer, x: torch.Tensor, sigmas, path: Path, seed: int = 0) -> Path:
    """One image x (3, H, W): the original, then decode(z0 + σ ε) for each σ (Fig. 7: noise added in the
    latent, seen in pixels), titled with σ."""
    plt = _pyplot()
    z0 = tokenizer.encode(x.unsqueeze(0))  # (1, C, h, w)
    g = torch.Generator().manual_seed(int(seed))
    eps = torch.randn(z0.shape, generator=g)
    panels = [("original", x)] + [(f"σ = {float(s):.2f}", tokenizer.decode(z0 + float(s) * eps)[0]) for s in sigmas]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.6 * len(panels), 1.9))
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(((img.float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"noise in the {tokenizer.name} latent (d = {tokenizer.latent_dim}), shown in pixels", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def tokenizer_pictures(cfg, tokenizer, val_set, out: Path) -> dict:
    """{wandb key: PNG path} of the tokenizer stage: reconstructions (written by evaluate_tokenizer), the PCA
    bases (patch_pca) and the latent-noise strip."""
    pc = cfg.pictures
    pics = {}
    recon = Path(out) / "tokenizer_recon.png"
    if recon.exists():
        pics["tokenizer/recon"] = recon
    if not pc.enabled:
        return pics
    if (bases := pca_bases(tokenizer, Path(out) / "pictures" / "pca_bases.png", int(pc.num_bases))) is not None:
        pics["pictures/pca_bases"] = bases
    x = val_set[0][0]
    pics["pictures/latent_noise"] = latent_noise(tokenizer, x, list(pc.sigmas), Path(out) / "pictures" / "latent_noise.png",
                                                 seed=int(cfg.seed))
    return pics


# ------------------------------------------------------------------------------------ probe curve

def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Write a figure to `path` (its folder made) and free it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def probe_curve(history: list[dict], path: Path, title: str = "") -> Path:
    """Validation top-1 (%) per evaluated epoch of the probe's head."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    ep = [h["epoch"] + 1 for h in history]
    top1 = [h["top1"] for h in history]
    ax.plot(ep, top1, marker="o", ms=3)
    if top1:
        ax.annotate(f"{top1[-1]:.1f}", (ep[-1], top1[-1]), textcoords="offset points", xytext=(0, 6), ha="center",
                    fontsize=8)
    ax.set_xlabel("probe epoch")
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    return path
