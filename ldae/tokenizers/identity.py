"""`tokenizer=none`: pixels. Each p x p patch is its own D-dim latent (PAPER.md Fig. 5, the pixel DAE)."""

from __future__ import annotations

import torch

from ldae.tokenizers.base import Tokenizer
from ldae.ops.patch import map_to_tokens, tokens_to_map


class Pixels(Tokenizer):
    name = "none"

    def __init__(self, patch_size: int, channels: int = 3):
        super().__init__(patch_size, patch_size * patch_size * channels, channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        return tokens_to_map(self.patchify(x), grid)  # (B, D, h, w)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.unpatchify(map_to_tokens(z), (z.shape[-2], z.shape[-1]))

    def basis(self) -> torch.Tensor:
        return torch.eye(self.patch_dim, device=self.fitted.device)
