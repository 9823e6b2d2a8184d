"""Generation for the DiT rows (PAPER.md Table 1: FID): sample grids and FID through torchmetrics.

FID needs InceptionV3 weights from a local file (`gen.fid.inception_path`, torch-fidelity's .pth); without
one the result is the string "no FID weights", never a download (DESIGN.md section 3). The real statistics
come from the run's own data or from `gen.fid.reference`, an .npz (mu, sigma) of ADM's evaluator.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ldae.data.sampling import random_subset
from ldae.diffusion.sampling import Denoiser, sample

log = logging.getLogger("ldae")

NO_FID_WEIGHTS = "no FID weights"


def denoiser_for(module, gen_cfg) -> Denoiser:
    """The EMA backbone (when there is one) of a PretrainModule, wrapped for sampling."""
    net = module.encoder(use_ema=True)
    net.eval()
    return Denoiser(net, module.objective, module.schedule, module.tokenizer,
                    guidance_scale=float(gen_cfg.guidance_scale), t_offset=int(gen_cfg.t_offset),
                    guidance_channels=str(gen_cfg.guidance_channels))


@torch.no_grad()
def generate_images(module, gen_cfg, n: int, seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
    """n images (n, 3, H, W) in [-1, 1]. A class-conditional model samples random classes unless labels are
    given; an unconditional one (or labels=None with gen.conditional false) feeds the null class."""
    den = denoiser_for(module, gen_cfg)
    device = next(den.model.parameters()).device
    if labels is None and module.class_cond and gen_cfg.conditional:
        g = torch.Generator().manual_seed(int(seed) + 1)
        labels = torch.randint(0, int(module.cfg.data.num_classes), (n,), generator=g)
    y = labels.to(device) if labels is not None and module.class_cond else None
    z0 = sample(den, gen_cfg.sampler, module.geometry.latent.shape(n), gen_cfg.steps, float(gen_cfg.eta), y, seed, device)
    return module.tokenizer.decode(z0).clamp(-1, 1)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> torch.Tensor:
    """Images in [-1, 1] -> one PNG grid at `path`; returns the grid (3, H', W') in [0, 1] for loggers."""
    from torchvision.utils import make_grid, save_image

    nrow = nrow or max(1, int(math.sqrt(images.shape[0])))
    grid = make_grid(images.detach().float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, str(path))
    return grid


def load_reference_stats(path: str | Path, feature: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu (D,), sigma (D, D)) in float64 from an `.npz` in the layout of ADM's evaluator and DiT's
    reference batches (arrays `mu`, `sigma` of the 2048-d pool features; other arrays are ignored)."""
    import numpy as np

    if not Path(path).is_file():
        raise FileNotFoundError(f"gen.fid.reference={path} does not exist (an .npz with arrays mu and sigma)")
    with np.load(path) as f:
        missing = [k for k in ("mu", "sigma") if k not in f.files]
        if missing:
            raise ValueError(f"gen.fid.reference={path} has no {' and '.join(missing)} array; "
                             f"it holds {', '.join(f.files) or 'nothing'} (expected ADM's layout: mu, sigma)")
        mu, sigma = torch.from_numpy(f["mu"]).double(), torch.from_numpy(f["sigma"]).double()
    if mu.shape != (feature,) or sigma.shape != (feature, feature):
        raise ValueError(f"gen.fid.reference={path} holds statistics of {tuple(mu.shape)} features, "
                         f"gen.fid.feature={feature} gives {feature} (ADM/DiT references are the 2048-d pool features)")
    return mu, sigma


def set_real_statistics(metric, mu: torch.Tensor, sigma: torch.Tensor, n: int = 2) -> None:
    """Give a torchmetrics FrechetInceptionDistance the real-image statistics (mu, sigma) instead of images:
    its states are the running sum and the sum of outer products, from which compute() forms the mean and
    the unbiased covariance; any n > 1 reproduces mu and sigma exactly."""
    dev = metric.real_features_sum.device
    mu, sigma = mu.to(dev, torch.float64), sigma.to(dev, torch.float64)
    metric.real_features_sum = (mu * n).to(metric.real_features_sum.dtype)
    metric.real_features_cov_sum = (sigma * (n - 1) + n * torch.outer(mu, mu)).to(metric.real_features_cov_sum.dtype)
    metric.real_features_num_samples = torch.tensor(n, device=dev, dtype=metric.real_features_num_samples.dtype)


def fid(module, gen_cfg, real_set, seed: int = 0) -> float | str:
    """FID between `gen.fid.num_samples` generated images and the real statistics: those of as many real
    images (a seeded sample of `real_set`; FID-50K at 50000), or `gen.fid.reference`, an .npz (mu, sigma)
    as ADM's evaluator and DiT publish them."""
    fcfg = gen_cfg.fid
    path = fcfg.get("inception_path")
    if not path:
        return NO_FID_WEIGHTS
    if not Path(path).is_file():
        raise FileNotFoundError(f"gen.fid.inception_path={path} does not exist (torch-fidelity InceptionV3 .pth)")
    from torchmetrics.image.fid import FrechetInceptionDistance

    device = next(module.encoder(use_ema=True).parameters()).device
    # Rank zero alone computes FID (ldae/stages.py): no all-gather with ranks that never call it.
    metric = FrechetInceptionDistance(feature=int(fcfg.feature), normalize=True, sync_on_compute=False,
                                      feature_extractor_weights_path=str(path)).to(device)
    n, bs = int(fcfg.num_samples), int(gen_cfg.batch_size)
    reference = fcfg.get("reference")
    if reference:
        set_real_statistics(metric, *load_reference_stats(reference, int(fcfg.feature)))
    else:
        real = random_subset(real_set, n, seed)  # the real statistics from a seeded sample, not a prefix
        for x, _, _ in DataLoader(real, batch_size=bs, shuffle=False):
            metric.update(((x.to(device) + 1) / 2).clamp(0, 1), real=True)
    done = 0
    while done < n:
        b = min(bs, n - done)
        imgs = generate_images(module, gen_cfg, b, seed=seed + done)
        metric.update((imgs + 1) / 2, real=False)
        done += b
    return float(metric.compute())


def generation_stage(cfg, module, real_set, out: Path, loggers=(), step: int = 0) -> dict:
    """Sample grid (out/samples.png, logged as gen/samples) and gen/fid; returns the results.json entries."""
    g = cfg.gen
    t0 = time.time()
    seed = int(g.seed)
    imgs = generate_images(module, g, int(g.grid_samples), seed=seed)
    grid = save_grid(imgs, out / "samples.png")
    score = fid(module, g, real_set, seed=seed + 1_000_003)
    for lg in loggers:
        if hasattr(lg, "log_image"):  # wandb
            lg.log_image(key="gen/samples", images=[grid], step=step)
        if not isinstance(score, str):
            lg.log_metrics({"gen/fid": score}, step=step)
    log.info("generation: %s, FID = %s", out / "samples.png", score)
    return {"gen_fid": score, "gen_samples": str(out / "samples.png"), "gen_sampler": g.sampler,
            "gen_steps": g.steps, "gen_guidance_scale": float(g.guidance_scale),
            "gen_guidance_channels": str(g.guidance_channels), "gen_wall_s": time.time() - t0}
