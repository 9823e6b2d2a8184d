"""Patchify / unpatchify with one fixed ordering shared by tokenizers, losses and the backbone.

A patch vector is (p_row, p_col, channel) flattened, the order DiT's unpatchify uses.
"""

from __future__ import annotations

import torch


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p*p*C) with N = (H/p)*(W/p), row-major over the patch grid."""
    b, c, h, w = x.shape
    assert h % p == 0 and w % p == 0, f"image {h}x{w} not divisible by patch {p}"
    x = x.reshape(b, c, h // p, p, w // p, p)
    x = torch.einsum("bchpwq->bhwpqc", x)  # (B, h, w, p, p, C)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: torch.Tensor, p: int, channels: int, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, p*p*C) -> (B, C, H, W), the inverse of `patchify`."""
    b = tokens.shape[0]
    h, w = grid
    x = tokens.reshape(b, h, w, p, p, channels)
    x = torch.einsum("bhwpqc->bchpwq", x)  # (B, C, h, p, w, q)
    return x.reshape(b, channels, h * p, w * p)


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, d) -> (B, d, h, w): a per-patch latent as a spatial map (the backbone's input format)."""
    b, n, d = tokens.shape
    return tokens.transpose(1, 2).reshape(b, d, *grid)


def map_to_tokens(z: torch.Tensor) -> torch.Tensor:
    """(B, d, h, w) -> (B, N, d)."""
    return z.flatten(2).transpose(1, 2)
