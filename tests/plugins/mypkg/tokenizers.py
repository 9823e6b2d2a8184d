"""A tokenizer that is not an ldae Tokenizer: a fixed random orthonormal projection of each patch, fitted
mean (so ldae fits it once and caches it as an artifact)."""

import torch
import torch.nn.functional as F
from torch import nn


class RandomPatchProjection(nn.Module):
    def __init__(self, patch_size: int, latent_dim: int, gain: float = 1.0, seed: int = 0):
        super().__init__()
        D = 3 * patch_size * patch_size
        q, _ = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(seed)))
        self.patch_size, self.latent_dim, self.gain = patch_size, latent_dim, gain
        self.register_buffer("proj", q[:, :latent_dim].contiguous())  # (D, d)
        self.register_buffer("mean", torch.zeros(D))
        self.fit_calls = 0

    def fit(self, batches) -> dict:
        s, n = torch.zeros_like(self.mean), 0
        for x in batches:
            p = F.unfold(x, self.patch_size, stride=self.patch_size)  # (B, D, N)
            s += p.sum(dim=(0, 2))
            n += p.shape[0] * p.shape[2]
        self.mean.copy_(s / n)
        self.fit_calls += 1
        return {"patches": n}

    def encode(self, x):
        B, _, H, W = x.shape
        p = F.unfold(x, self.patch_size, stride=self.patch_size) - self.mean[None, :, None]  # (B, D, N)
        z = torch.einsum("bdn,dk->bkn", p, self.proj) * self.gain  # (B, d, N)
        return z.reshape(B, self.latent_dim, H // self.patch_size, W // self.patch_size)

    def decode(self, z):
        B, d, h, w = z.shape
        p = torch.einsum("bkn,dk->bdn", z.reshape(B, d, h * w) / self.gain, self.proj) + self.mean[None, :, None]
        return F.fold(p, (h * self.patch_size, w * self.patch_size), self.patch_size, stride=self.patch_size)


class NoDecoder(nn.Module):
    """Lacks decode: ldae refuses it in one line."""

    def __init__(self, patch_size: int, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    def encode(self, x):
        return x
