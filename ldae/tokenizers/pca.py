"""Patch-wise PCA tokenizer (PAPER.md 2.2): z = V x per patch, with V V^T = I_d, no gradient training.

The bases come from an eigendecomposition of the covariance of randomly sampled patches, accumulated in one
streaming pass (sum x and sum x x^T: a float32 product per batch of shifted patches, summed in float64), so
ImageNet-size data never has to fit in memory.
Free choices the paper leaves open ([NF]) are named options:
  center: subtract the patch mean before projecting (default on; DESIGN.md section 2).
  scaling: "global" divides every latent by one factor so the d latents have unit average variance
      (the role of DiT's 0.18215; the noise σ ≤ √2 then means the same SNR at every scale), "none" keeps
      raw projections, "whiten" divides each of the d components by its own standard deviation (a named
      option, off by default). No per-component whitening by default: V is orthonormal, as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tqdm.auto import tqdm

from ldae import rules
from ldae.choices import PCA_SCALINGS as SCALINGS
from ldae.choices import check
from ldae.ops.patch import map_to_tokens, tokens_to_map
from ldae.tokenizers.base import Tokenizer


class PatchPCA(Tokenizer):
    name = "patch_pca"
    needs_fit = True

    def __init__(self, patch_size: int, latent_dim: int, channels: int = 3, center: bool = True,
                 scaling: str = "global", num_patches: int = 1_000_000, seed: int = 0):
        super().__init__(patch_size, latent_dim, channels)
        check("tokenizer.scaling", scaling, SCALINGS)
        rules.check_token_dim(latent_dim, patch_size, channels)
        self.center, self.scaling, self.num_patches, self.seed = center, scaling, num_patches, seed
        D = self.patch_dim
        self.register_buffer("mean", torch.zeros(D))
        self.register_buffer("components", torch.eye(D))  # (D, D): column i = i-th principal direction
        self.register_buffer("eigenvalues", torch.ones(D))  # (D,), descending
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("component_scale", torch.ones(D))  # (D,): per-component factor ("whiten")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Artifacts saved before the whitening option have no per-component factor: it is all ones there.
        state_dict.setdefault(prefix + "component_scale", torch.ones_like(self.component_scale))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # --- fitting -----------------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor]) -> dict:
        """One pass over image batches (B, 3, H, W); a uniform random sample of about `num_patches` patches.

        When the pass holds more patches than the budget, each patch is kept with probability
        budget / total (seeded), so the sample spans the whole pass rather than its first batches (a
        class-sorted folder would otherwise give the bases of its first classes). The total comes from
        `batches.num_images` (an `ImageBatches` stream) or a list of tensors; a stream of unknown length
        keeps every patch (the statistics are running sums: the budget only bounds time, not memory).
        """
        D = self.patch_dim
        s1 = torch.zeros(D, dtype=torch.float64)
        s2 = torch.zeros(D, D, dtype=torch.float64)
        n = 0
        gen = torch.Generator().manual_seed(self.seed)
        total_images = getattr(batches, "num_images", None)
        if total_images is None and isinstance(batches, (list, tuple)):
            total_images = sum(int(x.shape[0]) for x in batches)
        shift, keep_p = None, 1.0
        for x in tqdm(batches, desc="fit patch_pca", leave=False):
            x = x.float().cpu()
            if shift is None:
                # Shift by the first batch's mean (exactly undone below) so the float32 product of each batch
                # does not lose the covariance to cancellation; batches accumulate in float64.
                shift = self.patchify(x).reshape(-1, D).mean(0)  # (D,)
                per_image = (x.shape[-2] // self.patch_size) * (x.shape[-1] // self.patch_size)
                if total_images:
                    keep_p = min(1.0, self.num_patches / (total_images * per_image))
            p = self._shifted_patches(x, shift)  # (B*N, D), one pass: patchify and shift together
            if keep_p < 1.0:  # a Bernoulli(keep_p) choice per patch: the budget is spent over the whole pass
                p = p[torch.rand(p.shape[0], generator=gen) < keep_p]
            s1 += p.sum(0).double()  # a float32 sum per batch (a float64 one costs half the product)
            s2 += (p.T @ p).double()  # (D, D): a float32 product per batch (half the cost of float64)
            n += p.shape[0]
        if n < 2:
            raise ValueError("patch_pca.fit got no data")
        m = s1 / n  # mean of the shifted patches
        mean = shift.double() + m if self.center else torch.zeros_like(s1)
        # second moment about `mean`: E[(p - s)(p - s)^T] - (mean - s)(mean - s)^T, p - s the shifted patch
        c = m - (mean - shift.double())  # m when centring, m + s otherwise
        cov = s2 / n - torch.outer(m, m) + torch.outer(c, c)  # (D, D)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
        # Deterministic signs: the largest-magnitude entry of each direction is positive.
        idx = evecs.abs().argmax(0)
        evecs = evecs * torch.sign(evecs[idx, torch.arange(D)])
        self.mean.copy_(mean.float())
        self.components.copy_(evecs.float())
        self.eigenvalues.copy_(evals.float())
        top = evals[: self.latent_dim].mean().clamp_min(1e-12)
        self.scale.fill_(float(top.rsqrt()) if self.scaling == "global" else 1.0)
        if self.scaling == "whiten":
            self.component_scale.copy_(evals.clamp_min(1e-12 * float(evals[0].clamp_min(1e-30))).rsqrt().float())
        self.fitted.fill_(True)
        explained = float(evals[: self.latent_dim].sum() / evals.sum().clamp_min(1e-12))
        return {"num_patches": n, "keep_probability": keep_p, "explained_variance": explained,
                "latent_scale": float(self.scale)}

    def _shifted_patches(self, x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """patchify(x) - shift as one strided subtraction into a contiguous (B*N, D) buffer."""
        b, c, H, W = x.shape
        ps = self.patch_size
        view = x.reshape(b, c, H // ps, ps, W // ps, ps).permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p, p, C)
        out = torch.empty(view.shape, dtype=x.dtype)
        torch.sub(view, shift.view(1, 1, 1, ps, ps, c), out=out)
        return out.view(-1, self.patch_dim)

    # --- interface ---------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, d, H/p, W/p)."""
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        p = self.patchify(x) - self.mean  # (B, N, D)
        d = self.latent_dim
        z = p @ self.components[:, :d] * (self.scale * self.component_scale[:d])  # (B, N, d)
        return tokens_to_map(z, grid)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, d, h, w) -> (B, 3, h*p, w*p): V^T z + mean per patch."""
        d = self.latent_dim
        tokens = map_to_tokens(z) / (self.scale * self.component_scale[:d])  # (B, N, d)
        p = tokens @ self.components[:, : self.latent_dim].T + self.mean  # (B, N, D)
        return self.unpatchify(p, (z.shape[-2], z.shape[-1]))

    def basis(self) -> torch.Tensor:
        return self.components

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "center": self.center, "scaling": self.scaling,
                "num_patches": self.num_patches, "seed": self.seed,
                "patch_sample": "uniform"}  # the budget spread over the whole pass (a prefix before)
