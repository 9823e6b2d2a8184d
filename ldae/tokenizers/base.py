"""The tokenizer interface (DESIGN.md section 2).

encode(x): image (B, 3, H, W) in [-1, 1] -> latent map (B, d, H/p, W/p)
decode(z): latent map -> image
latent_dim: the per-token d actually used (the paper's d scaled to this patch size, ldae.plan.resolve_latent_dim)
basis(): the full orthonormal (D, D) basis of patch space, columns sorted by variance, when the tokenizer
    has one (PCA, pixels); the l-DAE loss weights per component need it. None otherwise.
fit(batches): learn from data (PCA: eigendecomposition); a no-op for tokenizers with nothing to learn. The
    gradient-trained ones (AE/VAE/conv VAE) need a trainer: ldae.lit.tokenizer.fit_trainable fits them.
latent_channels, latent_patch: the layout of the latent map the backbone patchifies. Patch tokenizers give
    (B, d, H/p, W/p) read with DiT patch 1; the conv VAE gives (B, C, H/s, W/s) read with DiT patch 2, so
    d = C x 2 x 2 per token and the token grid is the same (stride x DiT patch = p).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ldae.ops.patch import patchify, unpatchify

class Tokenizer(nn.Module):
    name = "base"
    needs_fit = False

    def __init__(self, patch_size: int, latent_dim: int, channels: int = 3):
        super().__init__()
        self.patch_size, self.latent_dim, self.channels = patch_size, latent_dim, channels
        self.register_buffer("fitted", torch.tensor(not self.needs_fit))

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * self.channels

    @property
    def latent_channels(self) -> int:
        return self.latent_dim

    @property
    def latent_patch(self) -> int:
        return 1

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        return patchify(x, self.patch_size)

    def unpatchify(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return unpatchify(tokens, self.patch_size, self.channels, grid)

    def grid(self, image_size: int) -> tuple[int, int]:
        return (image_size // self.patch_size, image_size // self.patch_size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_keyed(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """encode, with any randomness (a VAE's posterior sample) keyed per sample (ldae.ops.noise)."""
        return self.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def basis(self) -> torch.Tensor | None:
        return None

    def fit(self, batches: Iterable[torch.Tensor]) -> dict:
        return {}

    def fingerprint(self) -> dict:
        """What determines a fitted artifact, besides the data (the cache key)."""
        return {"name": self.name, "patch_size": self.patch_size, "latent_dim": self.latent_dim}

    def describe(self) -> dict:
        """Facts about this tokenizer for results.json (what the run did differently from the paper)."""
        return {}


class LatentNorm(nn.Module):
    """z_norm = (z - shift) * scale, measured on data so the corruption sees unit-variance latents.

    The role of DiT's 0.18215 for the SD-VAE. mode: "scale" (one global factor, unit second moment),
    "scale_shift" (per-channel mean removed, then one global factor to unit variance), "none".
    Stored as buffers, so the factors travel with the tokenizer artifact and every checkpoint.
    """

    def __init__(self, channels: int, mode: str = "scale"):
        super().__init__()
        from ldae.choices import LATENT_NORMS, check

        check("tokenizer.normalize", mode, LATENT_NORMS)
        self.mode = mode
        self.register_buffer("shift", torch.zeros(channels))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.shift.view(1, -1, 1, 1)) * self.scale

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.scale + self.shift.view(1, -1, 1, 1)

    @torch.no_grad()
    def measure(self, raw: torch.Tensor) -> dict:
        """raw: un-normalised latents (B, C, h, w) from the data."""
        raw = raw.double()
        if self.mode == "none":
            return {"latent_scale": 1.0}
        shift = raw.mean(dim=(0, 2, 3)) if self.mode == "scale_shift" else torch.zeros(raw.shape[1], dtype=raw.dtype)
        second = (raw - shift.view(1, -1, 1, 1)).pow(2).mean().clamp_min(1e-12)
        self.shift.copy_(shift.float())
        self.scale.fill_(float(second.rsqrt()))
        return {"latent_scale": float(self.scale), "latent_shift_norm": float(shift.norm())}


class ImageBatches:
    """A re-iterable stream of image batches (B, 3, H, W) from a loader of (x, y, index) samples that knows
    how many images one pass holds, so a patch budget (PCA) can be spread uniformly over the whole pass."""

    def __init__(self, loader: Iterable, num_images: int):
        self.loader, self.num_images = loader, int(num_images)

    def __iter__(self):
        return (batch[0] for batch in self.loader)
