"""Benchmark: fitting patch PCA on 10^6 patches of dimension 768 vs one float32 covariance product.

    python experiments/bench_pca.py pca [--patches 1000000] [--threads 1]

The issue's bar: `PatchPCA.fit` (patchify, float32 product per batch summed in float64, float64
eigendecomposition) costs at most twice a float32 X^T X over the same patches on the same machine.
Both sides stream the same 256 px images in batches (the reference gets its patch matrices precomputed,
so it pays no patchify); a pool of images is reused so the benchmark needs no dataset and ~1 GB of memory.
Prints one JSON line: times, ratio, machine. The timing is ldae/bench.py's `bench_pca`.
"""

from __future__ import annotations

import argparse
import json

from ldae.bench import bench_pca


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
