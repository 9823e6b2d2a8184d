"""Benchmark: fitting patch PCA on 10^6 patches of dimension 768 vs one float32 covariance product.

    python experiments/bench_pca.py pca [--patches 1000000] [--threads 1]

The issue's bar: `PatchPCA.fit` (patchify, float32 product per batch summed in float64, float64
eigendecomposition) costs at most twice a float32 X^T X over the same patches on the same machine.
Both sides stream the same 256 px images in batches (the reference gets its patch matrices precomputed,
so it pays no patchify); a pool of images is reused so the benchmark needs no dataset and ~1 GB of memory.
Prints one JSON line: times, ratio, machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch


def bench_pca(patches: int = 1_000_000, image_size: int = 256, patch: int = 16, batch_images: int = 64,
              threads: int = 1, repeats: int = 2) -> dict:
    from ldae.tokenizers import PatchPCA
    from ldae.tokenizers.patch import patchify

    torch.set_num_threads(threads)
    per_image = (image_size // patch) ** 2
    per_batch = per_image * batch_images
    n_batches = -(-patches // per_batch)
    g = torch.Generator().manual_seed(0)
    pool = [torch.rand(batch_images, 3, image_size, image_size, generator=g) * 2 - 1 for _ in range(4)]
    mats = [patchify(x, patch).reshape(-1, 3 * patch * patch) for x in pool]  # (per_batch, 768) each

    def batches():
        for i in range(n_batches):
            yield pool[i % len(pool)]

    def covariance_product() -> float:
        t0 = time.perf_counter()
        acc = torch.zeros(mats[0].shape[1], mats[0].shape[1])
        for i in range(n_batches):
            m = mats[i % len(mats)]
            acc += m.T @ m  # float32 (D, D)
        return time.perf_counter() - t0

    def fit() -> float:
        pca = PatchPCA(patch, 32, num_patches=n_batches * per_batch)
        t0 = time.perf_counter()
        pca.fit(batches())
        return time.perf_counter() - t0

    ref = min(covariance_product() for _ in range(repeats))
    fit_s = min(fit() for _ in range(repeats))
    return {"bench": "pca", "patches": n_batches * per_batch, "patch_dim": 3 * patch * patch,
            "fit_s": round(fit_s, 3), "cov_product_f32_s": round(ref, 3), "ratio": round(fit_s / ref, 3),
            "threads": threads, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pca", help="PatchPCA.fit vs a float32 covariance product")
    p.add_argument("--patches", type=int, default=1_000_000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    if a.cmd == "pca":
        print(json.dumps(bench_pca(a.patches, threads=a.threads, repeats=a.repeats)))


if __name__ == "__main__":
    main()
