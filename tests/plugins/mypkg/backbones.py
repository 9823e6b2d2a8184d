"""A backbone that is not ldae's DiT: patch embedding, a step embedding added to every token, residual token MLPs
and a linear head back to patches. It takes only the geometry and width it names."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class TokenMLP(nn.Module):
    def __init__(self, input_size: int, patch_size: int, in_channels: int, out_channels: int, out_patch_size: int,
                 hidden_size: int, depth: int, width_scale: int = 1):
        super().__init__()
        self.hidden_size = hidden_size * width_scale
        self.out_channels, self.out_patch_size = out_channels, out_patch_size
        self.grid = input_size // patch_size
        self.embed = nn.Conv2d(in_channels, self.hidden_size, patch_size, stride=patch_size)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(self.hidden_size),
                                                  nn.Linear(self.hidden_size, 2 * self.hidden_size), nn.GELU(),
                                                  nn.Linear(2 * self.hidden_size, self.hidden_size))
                                    for _ in range(depth))
        self.head = nn.Linear(self.hidden_size, out_channels * out_patch_size ** 2)

    def step_embedding(self, t: torch.Tensor) -> torch.Tensor:
        half = self.hidden_size // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
        a = t.float()[:, None] * freqs[None]  # (B, half)
        return torch.cat([a.cos(), a.sin()], dim=1)  # (B, hidden)

    def tokens(self, x, t, depth=None):
        h = self.embed(x).flatten(2).transpose(1, 2) + self.step_embedding(t)[:, None]  # (B, N, hidden)
        for blk in self.blocks[: len(self.blocks) // 2 if depth is None else depth]:
            h = h + blk(h)
        return h

    def forward_features(self, x, t, y=None, depth=None):
        return self.tokens(x, t, depth).mean(1)  # (B, hidden)

    def forward(self, x, t, y=None):
        h = self.tokens(x, t, len(self.blocks))
        out = self.head(h).transpose(1, 2)  # (B, C p², N)
        side = self.grid * self.out_patch_size
        return F.fold(out, (side, side), self.out_patch_size, stride=self.out_patch_size)  # (B, C, side, side)


class NoFeatures(nn.Module):
    def forward(self, x, t, y=None):
        return x
