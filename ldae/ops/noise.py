"""Counter-based randomness for the corruption: t and ε of a sample depend only on (seed, epoch, index).

DESIGN.md section 2: one process and eight must draw the same noise for a sample, and a resumed run must
draw what the uninterrupted one drew. A stateful generator cannot promise that once batches are split
across ranks, so every random number here is a hash of (key, stream, counter), computed with int64
tensor ops on the batch's own device (no host round trip, vectorised over the batch).
"""

from __future__ import annotations

import math

import torch

_M32 = 0xFFFFFFFF
# Stream ids keep the draws for t and for ε independent of each other.
STREAM_T = 0x5EED0001
STREAM_EPS = 0x5EED0002
STREAM_FLIP = 0x5EED0003  # the latent cache's flip
STREAM_POSTERIOR = 0x5EED0004  # a VAE tokenizer's posterior sample (encoded on the fly or from the cache)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for x in [0, 2^32), without int64 overflow (16-bit halves of x)."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (xorshift-multiply rounds): avalanches every input bit."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def sample_keys(seed: int, epoch: int, index: torch.Tensor) -> torch.Tensor:
    """One 32-bit key per sample from (seed, epoch, dataset index). index: (B,) int -> (B,) int64."""
    k = _mix32(torch.full_like(index, seed & _M32, dtype=torch.int64) ^ 0x9E3779B9)
    k = _mix32(k ^ (epoch & _M32))
    return _mix32(k ^ (index.to(torch.int64) & _M32))


def _uniform(keys: torch.Tensor, n: int, stream: int) -> torch.Tensor:
    """(B,) keys -> (B, n) floats in (0, 1), 24 random bits each (exact in float32)."""
    counter = torch.arange(n, device=keys.device, dtype=torch.int64)  # (n,)
    h = _mix32(_mix32(keys ^ stream)[:, None] ^ counter[None, :])  # (B, n)
    h = _mix32(h + counter[None, :])
    return ((h >> 8).float() + 0.5) / float(1 << 24)


def keyed_uniform_int(keys: torch.Tensor, low: int, high: int, stream: int = STREAM_T) -> torch.Tensor:
    """One integer per sample, uniform in [low, high). (B,) -> (B,) int64."""
    u = _uniform(keys, 1, stream)[:, 0]
    return (low + (u * (high - low)).long()).clamp_(low, high - 1)


def keyed_normal(keys: torch.Tensor, shape: tuple[int, ...], stream: int = STREAM_EPS,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normals of shape (B, *shape) by Box-Muller on keyed uniforms."""
    n = math.prod(shape)
    u = _uniform(keys, 2 * n, stream)  # (B, 2n)
    u1, u2 = u[:, :n], u[:, n:]
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)  # (B, n)
    return z.view(keys.shape[0], *shape).to(dtype)
