"""Tokenizers trained by gradient descent (patch AE/VAE, conv VAE): the shared fit and encode/decode logic.

A subclass provides `posterior(x) -> (mean, logvar | None)` (raw latent maps), `decode_raw(z) -> image`
and `last_layer()` (the decoder's last weight, for the adversarial term's adaptive weight).
`encode` returns the normalised latent (`LatentNorm`, measured on data after training): a sample of the
posterior while the module is in training mode and `posterior=sample`, its mean otherwise.
Training needs a Lightning trainer, so it is not here: ldae.lit.tokenizer.fit_trainable runs `prepare`, the
optimisation over `make_loss()` and `measure_norm`, and the fit stage calls it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ldae.ops.noise import STREAM_POSTERIOR, keyed_normal
from ldae.tokenizers.base import LatentNorm, Tokenizer


class TrainableTokenizer(Tokenizer):
    needs_fit = True
    variational = False

    def __init__(self, patch_size: int, latent_dim: int, *, train: dict, loss: dict, normalize: str, posterior: str,
                 norm_batches: int, spec: dict, channels: int = 3):
        super().__init__(patch_size, latent_dim, channels)
        from ldae.choices import POSTERIORS, check

        check("tokenizer.posterior", posterior, POSTERIORS)
        self.train_cfg = dict(train)
        self.loss_cfg = dict(loss)
        self.posterior_mode, self.norm_batches = posterior, int(norm_batches)
        self.spec = dict(spec)
        self.normalize = normalize
        self.history: list[dict] = []  # the loss terms of each training step (set by the trainer)

    def _init_norm(self) -> None:
        """Call at the end of a subclass constructor, once latent_channels is known."""
        self.norm = LatentNorm(self.latent_channels, self.normalize)

    # --- subclass hooks ----------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def last_layer(self) -> torch.Tensor | None:
        return None

    def trainable_parameters(self):
        return list(self.parameters())

    # --- interface ---------------------------------------------------------------------------------
    def sample_raw(self, x: torch.Tensor, sample: bool, keys: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(latent, mean, logvar): a posterior sample when `sample`, its noise keyed on `keys` (B,) when given
        (pretraining: the same sample on any number of ranks), else from the global RNG (tokenizer training)."""
        mean, logvar = self.posterior(x)
        if sample and logvar is not None:
            noise = torch.randn_like(mean) if keys is None else \
                keyed_normal(keys, tuple(mean.shape[1:]), STREAM_POSTERIOR, dtype=mean.dtype)  # (B, C, h, w)
            return mean + (0.5 * logvar).exp() * noise, mean, logvar
        return mean, mean, logvar

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z, _, _ = self.sample_raw(x, self.training and self.posterior_mode == "sample")
        return self.norm(z)

    def encode_keyed(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        z, _, _ = self.sample_raw(x, self.training and self.posterior_mode == "sample", keys)
        return self.norm(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode_raw(self.norm.inverse(z))

    def reconstruct_for_training(self, x: torch.Tensor):
        """(reconstruction, posterior mean, posterior logvar) through a posterior sample (the VAE's ELBO)."""
        z, mean, logvar = self.sample_raw(x, True)
        return self.decode_raw(z), mean, logvar

    def make_loss(self):
        from ldae.tokenizers.losses import AutoencoderLoss

        c = self.loss_cfg
        return AutoencoderLoss(recon=c["recon"], kl_weight=c["kl_weight"] if self.variational else 0.0,
                               perceptual=c["perceptual"], adversarial=c["adversarial"])

    def random_backbone(self) -> bool:
        p = self.loss_cfg["perceptual"]  # a term at weight 0 needs none of its other keys
        return float(p["weight"]) > 0 and bool(p["random_backbone"]) and not p["backbone_path"] and \
            int(self.train_cfg["steps"]) > 0

    def describe(self) -> dict:
        return {"perceptual_random_backbone": True} if self.random_backbone() else {}

    # --- fitting -----------------------------------------------------------------------------------
    def prepare(self) -> dict:
        """Before training (e.g. load public weights). Returns facts for the record."""
        return {}

    def fit(self, batches: Iterable) -> dict:
        # Tokenizer.fit would return {} and leave it unfitted: say who trains it instead.
        raise TypeError(f"tokenizer {self.name} is trained by gradient descent: fit it with "
                        f"ldae.lit.tokenizer.fit_trainable (the fit stage passes it to fit_or_load)")

    @torch.no_grad()
    def measure_norm(self, batches: Iterable) -> dict:
        was = self.training
        self.eval()
        raws = []
        for i, b in enumerate(batches):
            if i >= self.norm_batches:
                break
            x = b[0] if isinstance(b, (list, tuple)) else b
            # What encode hands the corruption while pretraining: posterior samples or means.
            z, _, _ = self.sample_raw(x.to(self.fitted.device), self.posterior_mode == "sample")
            raws.append(z.cpu())  # (B, C, h, w)
        self.train(was)
        return self.norm.measure(torch.cat(raws))

    def fingerprint(self) -> dict:
        spec = {k: v for k, v in self.spec.items() if k not in ("cache",)}
        return {**super().fingerprint(), "spec": spec}
