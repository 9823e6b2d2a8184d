"""Patch-wise AE and VAE (PAPER.md 2.2): a linear encoder V and decoder U^T on flattened p x p patches.

  patch_ae:  ‖x − Uᵀ V x‖²                   (U, V ∈ R^{d×D}, no constraint, gradient descent)
  patch_vae: ‖x − Uᵀ z‖² + KL[q(z|x) | N(0, I)], z ~ N(V x, diag(exp(W x)))
Both carry a bias on each map (the affine version of the formula: it lets the AE learn the centring PCA
gets from its mean). The VAE's variance parameterisation is [NF]: a second linear map gives log σ².
Neither has an orthonormal basis, so the l-DAE per-component loss weights fall back to plain pixel MSE.
"""

from __future__ import annotations

import torch
from torch import nn

from ldae import rules
from ldae.ops.patch import map_to_tokens, tokens_to_map
from ldae.tokenizers.trainable import TrainableTokenizer


class PatchAE(TrainableTokenizer):
    name = "patch_ae"

    def __init__(self, patch_size: int, latent_dim: int, **kw):
        super().__init__(patch_size, latent_dim, **kw)
        D = self.patch_dim
        rules.check_token_dim(latent_dim, patch_size)
        g = torch.Generator().manual_seed(int(self.train_cfg["seed"]))
        self.enc = nn.Linear(D, latent_dim)  # V
        self.dec = nn.Linear(latent_dim, D)  # U^T
        # Start near a random orthonormal pair (V = Q^T, U = Q): a well-conditioned point for gradient descent.
        q, _ = torch.linalg.qr(torch.randn(D, latent_dim, generator=g))  # (D, d)
        with torch.no_grad():
            self.enc.weight.copy_(q.T)
            self.dec.weight.copy_(q)
            self.enc.bias.zero_()
            self.dec.bias.zero_()
        if self.variational:
            self.enc_logvar = nn.Linear(D, latent_dim)
            nn.init.zeros_(self.enc_logvar.weight)
            nn.init.constant_(self.enc_logvar.bias, -4.0)  # start with a small posterior variance
        self._init_norm()

    def posterior(self, x: torch.Tensor):
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        p = self.patchify(x)  # (B, N, D)
        mean = tokens_to_map(self.enc(p), grid)  # (B, d, h, w)
        logvar = tokens_to_map(self.enc_logvar(p), grid).clamp(-30, 20) if self.variational else None
        return mean, logvar

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        p = self.dec(map_to_tokens(z))  # (B, N, D)
        return self.unpatchify(p, (z.shape[-2], z.shape[-1]))

    def last_layer(self) -> torch.Tensor:
        return self.dec.weight


class PatchVAE(PatchAE):
    name = "patch_vae"
    variational = True
