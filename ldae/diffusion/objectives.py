"""What the network predicts, in which space it sees its input, and how the error is weighted.

PAPER.md 2.1 and 2.3. The path of Table 3 is four settings of one module (each prediction: `predictions.py`):
  predict=eps|x0 (in the latent), image_pca (the image through the inverse tokenizer: V^T V x0),
  image (the original x0, error weighted per PCA component: w_i = 1 for i ≤ d, `residual_weight` beyond);
  input=latent|image (the noisy latent, or it mapped to pixels by the inverse tokenizer);
  lambda_t=one|snr|gamma2|inv_one_plus_sigma2 (the per-sample weight λ_t).
With a learned-σ backbone (DiT's default; Nichol & Dhariwal's improved DDPM) the network also outputs v in
[-1, 1] per channel, log σ²_model = (v+1)/2 · log β_t + (1−(v+1)/2) · log β̃_t, and the loss gains the
variational-bound term `vb_term` (KL to the true posterior, the mean held fixed by a stop-gradient).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ldae import rules
from ldae.choices import INPUTS, LAMBDAS, OUTPUT_BASES, check
from ldae.diffusion.predictions import PREDICTION


def loss_weight(kind: str, gamma: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """λ_t per sample from γ_t, σ_t (B,)."""
    check("target.lambda_t", kind, LAMBDAS)
    if kind == "one":
        return torch.ones_like(gamma)
    if kind == "snr":  # Salimans & Ho; clamped where σ reaches 0
        return gamma**2 / sigma.clamp_min(1e-4) ** 2
    if kind == "gamma2":  # the paper's choice for x0 prediction (more weight on cleaner data)
        return gamma**2
    return 1.0 / (1.0 + sigma**2)  # inv_one_plus_sigma2: once γ ≡ 1 (PAPER.md 2.1)


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (logvar2 - logvar1 - 1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """−log p(x) of x in [-1, 1] quantised to 256 bins under N(mean, e^{2 log_std}) (DDPM's decoder term), nats."""
    inv_std = torch.exp(-log_std)
    cdf_hi = torch.special.ndtr(inv_std * (x - mean + 1 / 255))
    cdf_lo = torch.special.ndtr(inv_std * (x - mean - 1 / 255))
    log_p = torch.where(x < -0.999, cdf_hi.clamp_min(1e-12).log(),
                        torch.where(x > 0.999, (1 - cdf_lo).clamp_min(1e-12).log(),
                                    (cdf_hi - cdf_lo).clamp_min(1e-12).log()))
    return -log_p


def learned_log_variance(schedule, v: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """v in [-1, 1] (B, C, ...) -> log variance between log β̃ (v = −1) and log β (v = +1) of the step t -> s."""
    shape = (-1,) + (1,) * (v.ndim - 1)
    min_log = schedule.posterior_log_variance_clipped(t, s).view(shape)
    max_log = schedule.step_variance(t, s).clamp_min(1e-20).log().view(shape)
    frac = (v + 1) / 2
    return frac * max_log + (1 - frac) * min_log


def vb_term(schedule, predict: str, mean_out: torch.Tensor, var_out: torch.Tensor, z0: torch.Tensor,
            z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The learned-σ bound term L_vlb per sample (B,), in bits per dimension, as improved DDPM / DiT train it.

    mean_out: the ε or x0 prediction (its gradient is stopped: only the variance learns from this term);
    var_out: the interpolation values v. t ≥ 1; at t = 1 the decoder NLL, elsewhere KL(q(z_{t−1}|z_t,z0) || p).
    """
    rules.check_learned_sigma(predict)
    spec = PREDICTION[predict]
    x0_hat = spec.to_x0(mean_out.detach(), z_t, t, schedule, None)  # a latent prediction: no tokenizer
    s = t - 1
    model_log = learned_log_variance(schedule, var_out, t, s)
    model_mean = schedule.posterior_mean(z_t, x0_hat, t, s)
    true_mean = schedule.posterior_mean(z_t, z0, t, s)
    true_log = schedule.posterior_log_variance_clipped(t, s).view((-1,) + (1,) * (z0.ndim - 1))
    kl = normal_kl(true_mean, true_log, model_mean, model_log).flatten(1).mean(1) / math.log(2)  # (B,)
    nll = discretized_gaussian_nll(z0, model_mean, 0.5 * model_log).flatten(1).mean(1) / math.log(2)
    return torch.where(t == 1, nll, kl)


class Objective(nn.Module):
    def __init__(self, predict: str = "image", input: str = "image", lambda_t: str = "inv_one_plus_sigma2",
                 residual_weight: float = 0.1, output_basis: str = "pixels"):
        super().__init__()
        check("target.predict", predict, PREDICTION)
        check("target.input", input, INPUTS)
        loss_weight(lambda_t, torch.ones(1), torch.ones(1))  # validates the name
        check("target.output_basis", output_basis, OUTPUT_BASES)
        self.predict, self.input, self.lambda_t = predict, input, lambda_t
        self.spec = PREDICTION[predict]
        self.residual_weight = float(residual_weight)
        self.output_basis = output_basis

    @property
    def output_space(self) -> str:
        return self.spec.space

    def prediction(self, out: torch.Tensor, tokenizer) -> torch.Tensor:
        """The network's output as the prediction: as it is, or (output_basis=tokenizer, an image output) read
        as coefficients in the tokenizer's orthonormal patch basis and mapped to pixels, x = Σ_i c_i v_i per patch.
        The map is orthonormal, so the loss is unchanged in value; only the coordinates the output layer (and
        its optimiser's per-coordinate steps) work in change: the first d of them span the PCA subspace."""
        if self.output_basis == "pixels" or self.output_space != "image":
            return out
        p = tokenizer.patch_size
        coeffs = tokenizer.patchify(out)  # (B, N, D)
        return tokenizer.unpatchify(coeffs @ tokenizer.basis().T, (out.shape[-2] // p, out.shape[-1] // p))

    def network_input(self, z_t: torch.Tensor, tokenizer) -> torch.Tensor:
        """The noisy latent (B, d, h, w), or it decoded to pixels (B, 3, H, W)."""
        return z_t if self.input == "latent" else tokenizer.decode(z_t)

    def target(self, x0: torch.Tensor, z0: torch.Tensor, eps: torch.Tensor, tokenizer) -> torch.Tensor:
        return self.spec.target(x0, z0, eps, tokenizer)

    def forward(self, pred: torch.Tensor, x0: torch.Tensor, z0: torch.Tensor, eps: torch.Tensor,
                gamma: torch.Tensor, sigma: torch.Tensor, tokenizer, *, var_out: torch.Tensor | None = None,
                z_t: torch.Tensor | None = None, t: torch.Tensor | None = None,
                schedule=None) -> tuple[torch.Tensor, dict]:
        """Loss and its named terms. pred: network output; x0 image (B,3,H,W); z0, eps latents; γ, σ (B,).

        With a learned-σ backbone pass its variance channels as var_out (and z_t, t, schedule): the loss
        becomes the weighted MSE + the bound term `vb` (DiT: loss = mse + vb).
        """
        lam = loss_weight(self.lambda_t, gamma, sigma)  # (B,)
        err = self.target(x0, z0, eps, tokenizer) - pred
        terms: dict[str, torch.Tensor] = {}
        basis = tokenizer.basis() if self.spec.per_component else None
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
        if var_out is not None:
            vb = vb_term(schedule, self.predict, pred, var_out, z0, z_t, t).mean()
            terms["mse"] = loss.detach()
            terms["vb"] = vb.detach()
            loss = loss + vb
        return loss, terms
