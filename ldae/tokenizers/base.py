"""The tokenizer interface (DESIGN.md section 2).

encode(x): image (B, 3, H, W) in [-1, 1] -> latent map (B, d, H/p, W/p)
decode(z): latent map -> image
latent_dim: the per-token d actually used (the paper's d scaled to this patch size, `effective_latent_dim`)
basis(): the full orthonormal (D, D) basis of patch space, columns sorted by variance, when the tokenizer
    has one (PCA, pixels); the l-DAE loss weights per component need it. None otherwise.
fit(batches): learn from data (PCA: eigendecomposition); a no-op for tokenizers with nothing to learn.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ldae.tokenizers.patch import patchify, unpatchify

PAPER_PATCH_DIM = 768  # 16 x 16 x 3: the paper's per-token dimension D


def effective_latent_dim(paper_d: int, patch_dim: int) -> int:
    """The paper's d (per 768-dim patch) at a scale whose patch dimension is D: round(d × D / 768), ≥ 1."""
    return max(1, round(paper_d * patch_dim / PAPER_PATCH_DIM))


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

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        return patchify(x, self.patch_size)

    def unpatchify(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return unpatchify(tokens, self.patch_size, self.channels, grid)

    def grid(self, image_size: int) -> tuple[int, int]:
        return (image_size // self.patch_size, image_size // self.patch_size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def basis(self) -> torch.Tensor | None:
        return None

    def fit(self, batches: Iterable[torch.Tensor]) -> dict:
        return {}

    def fingerprint(self) -> dict:
        """What determines a fitted artifact, besides the data (the cache key)."""
        return {"name": self.name, "patch_size": self.patch_size, "latent_dim": self.latent_dim}
