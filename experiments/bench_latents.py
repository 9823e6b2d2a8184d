"""Benchmark: pretraining steps that encode images with a frozen conv VAE vs steps that read the latent cache.

    python experiments/bench_latents.py [--scale cpu] [--steps 10] [--threads 1]

Builds the scale's `vqgan` tokenizer (random weights: the cost does not depend on them) and a latent-space
l-DAE objective (predict eps from the noisy latent), then times full optimisation steps (tokenizer encode or
cached-posterior sampling, corruption, backbone forward/backward, AdamW) on one batch. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch


def bench_latents(scale: str = "cpu", steps: int = 10, threads: int = 1) -> dict:
    from ldae.cli import compose_config
    from ldae.lit.pretrain import PretrainModule

    torch.set_num_threads(threads)
    cfg = compose_config(["experiment=ldae", f"scale={scale}", "tokenizer=vqgan", "target.input=latent",
                          "target.predict=eps", "target.lambda_t=one", "optim.ema=false"])
    module = PretrainModule.from_config(cfg)
    tok = module.tokenizer
    tok.norm.scale.fill_(1.0)
    B, S = int(cfg.data.batch_size), int(cfg.data.image_size)
    x = torch.rand(B, 3, S, S) * 2 - 1
    index = torch.arange(B)
    with torch.no_grad():  # what the cache would hold for this batch
        m, lv = tok.posterior(x)
        mean, logvar = torch.stack([m, m], 1), torch.stack([lv, lv], 1)
    opt = torch.optim.AdamW(module.backbone.parameters(), lr=1e-4)
    module.train()

    def step(cached: bool) -> None:
        z0 = module.latents_from_cache(mean, logvar, index, 0) if cached else None
        z0, eps, t, inp = module.corrupt(None if cached else x, index, 0, z0)
        pred = module.backbone(inp, t)
        loss, _ = module.objective(pred, None, z0, eps, module.schedule.gamma[t], module.schedule.sigma[t], tok)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def timed(cached: bool) -> float:
        step(cached)  # warm-up
        t0 = time.perf_counter()
        for _ in range(steps):
            step(cached)
        return (time.perf_counter() - t0) / steps

    enc, lat = timed(False), timed(True)
    return {"bench": "latent_cache", "scale": scale, "batch": B, "image_size": S,
            "latent": list(m.shape[1:]), "step_s_encode": round(enc, 4), "step_s_cached": round(lat, 4),
            "speedup": round(enc / lat, 2), "threads": threads,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}


DIT_L_GFLOP_PER_IMAGE = 465.0  # DESIGN.md section 4: one DiT-L/2 image, forward + backward (measured)


def paper_encoder_cost(image_size: int = 256, threads: int = 1) -> dict:
    """FLOPs (and CPU time) of the SD-VAE-size encoder on one image, against a DiT-L/2 training image:
    the fraction of a paper-scale pretraining step the latent cache removes."""
    from diffusers import AutoencoderKL
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(threads)
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4).eval()
    x = torch.rand(1, 3, image_size, image_size) * 2 - 1
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        vae.encode(x)
    gflop = fc.get_total_flops() / 1e9
    with torch.no_grad():
        t0 = time.perf_counter()
        vae.encode(x)
        cpu_s = time.perf_counter() - t0
    return {"bench": "sd_vae_encoder", "gflop_per_image": round(gflop, 1), "cpu_s_per_image": round(cpu_s, 2),
            "dit_l_train_gflop_per_image": DIT_L_GFLOP_PER_IMAGE,
            "projected_speedup_flops": round((DIT_L_GFLOP_PER_IMAGE + gflop) / DIT_L_GFLOP_PER_IMAGE, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--paper-encoder", action="store_true", help="also count the SD-VAE encoder's FLOPs at 256 px")
    a = ap.parse_args()
    print(json.dumps(bench_latents(a.scale, a.steps, a.threads)))
    if a.paper_encoder:
        print(json.dumps(paper_encoder_cost(threads=a.threads)))


if __name__ == "__main__":
    main()
