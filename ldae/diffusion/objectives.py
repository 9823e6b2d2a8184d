"""What the network predicts, in which space it sees its input, and how the error is weighted.

PAPER.md 2.1 and 2.3. The path of Table 3 is four settings of one module:
  predict=eps|x0 (in the latent), image_pca (the image through the inverse tokenizer: V^T V x0),
  image (the original x0, error weighted per PCA component: w_i = 1 for i ≤ d, `residual_weight` beyond);
  input=latent|image (the noisy latent, or it mapped to pixels by the inverse tokenizer);
  lambda_t=one|snr|gamma2|inv_one_plus_sigma2 (the per-sample weight λ_t).
"""

from __future__ import annotations

import torch
from torch import nn

from ldae.choices import INPUTS, LAMBDAS, PREDICTIONS


def loss_weight(kind: str, gamma: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """λ_t per sample from γ_t, σ_t (B,)."""
    if kind == "one":
        return torch.ones_like(gamma)
    if kind == "snr":  # Salimans & Ho; clamped where σ reaches 0
        return gamma**2 / sigma.clamp_min(1e-4) ** 2
    if kind == "gamma2":  # the paper's choice for x0 prediction (more weight on cleaner data)
        return gamma**2
    if kind == "inv_one_plus_sigma2":  # once γ ≡ 1 (PAPER.md 2.1)
        return 1.0 / (1.0 + sigma**2)
    raise ValueError(f"unknown lambda_t '{kind}'; allowed: {', '.join(LAMBDAS)}")


class Objective(nn.Module):
    def __init__(self, predict: str = "image", input: str = "image", lambda_t: str = "inv_one_plus_sigma2",
                 residual_weight: float = 0.1):
        super().__init__()
        if predict not in PREDICTIONS:
            raise ValueError(f"unknown target.predict '{predict}'; allowed: {', '.join(PREDICTIONS)}")
        if input not in INPUTS:
            raise ValueError(f"unknown target.input '{input}'; allowed: {', '.join(INPUTS)}")
        loss_weight(lambda_t, torch.ones(1), torch.ones(1))  # validates the name
        self.predict, self.input, self.lambda_t = predict, input, lambda_t
        self.residual_weight = float(residual_weight)

    @property
    def output_space(self) -> str:
        return "latent" if self.predict in ("eps", "x0") else "image"

    def network_input(self, z_t: torch.Tensor, tokenizer) -> torch.Tensor:
        """The noisy latent (B, d, h, w), or it decoded to pixels (B, 3, H, W)."""
        return z_t if self.input == "latent" else tokenizer.decode(z_t)

    def target(self, x0: torch.Tensor, z0: torch.Tensor, eps: torch.Tensor, tokenizer) -> torch.Tensor:
        if self.predict == "eps":
            return eps
        if self.predict == "x0":
            return z0
        if self.predict == "image_pca":
            return tokenizer.decode(z0)
        return x0

    def forward(self, pred: torch.Tensor, x0: torch.Tensor, z0: torch.Tensor, eps: torch.Tensor,
                gamma: torch.Tensor, sigma: torch.Tensor, tokenizer) -> tuple[torch.Tensor, dict]:
        """Loss and its named terms. pred: network output; x0 image (B,3,H,W); z0, eps latents; γ, σ (B,)."""
        lam = loss_weight(self.lambda_t, gamma, sigma)  # (B,)
        err = self.target(x0, z0, eps, tokenizer) - pred
        terms: dict[str, torch.Tensor] = {}
        basis = tokenizer.basis() if self.predict == "image" else None
        if basis is None:
            per_sample = err.pow(2).flatten(1).mean(1)  # (B,)
        else:
            # Eq. 4: r = V_full (x0 - pred) per patch; Σ_i w_i r_i², averaged over patches, / D.
            r = tokenizer.patchify(err) @ basis  # (B, N, D), components sorted by variance
            d = tokenizer.latent_dim
            r2 = r.pow(2)
            principal = r2[..., :d].sum(-1).mean(1)  # (B,)
            residual = r2[..., d:].sum(-1).mean(1)  # (B,)
            per_sample = (principal + self.residual_weight * residual) / r.shape[-1]
            terms["principal_mse"] = (principal / d).mean().detach()
            if r.shape[-1] > d:
                terms["residual_mse"] = (residual / (r.shape[-1] - d)).mean().detach()
        loss = (lam * per_sample).mean()
        terms["unweighted_mse"] = err.pow(2).mean().detach()
        return loss, terms
