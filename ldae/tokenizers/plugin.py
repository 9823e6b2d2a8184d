"""A user's tokenizer (built from `tokenizer._target_`, ldae.plugins) behind ldae's Tokenizer interface."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ldae.tokenizers.base import Tokenizer


class PluginTokenizer(Tokenizer):
    """Wraps an object with encode/decode/latent_dim that is not an ldae Tokenizer. Optional parts are used
    when the object has them: fit(batches) -> dict (then it is fitted and cached like PCA), basis(),
    latent_channels, latent_patch. An nn.Module's parameters and buffers travel in the checkpoint."""

    def __init__(self, inner, name: str, patch_size: int, plugin: dict):
        self.needs_fit = callable(getattr(inner, "fit", None))  # read by Tokenizer.__init__ (the fitted flag)
        super().__init__(int(getattr(inner, "patch_size", patch_size)), int(inner.latent_dim))
        self.name, self.plugin = name, plugin
        if isinstance(inner, nn.Module):
            self.inner = inner
        else:
            object.__setattr__(self, "inner", inner)  # a plain object: no state to save

    @property
    def latent_channels(self) -> int:
        return int(getattr(self.inner, "latent_channels", self.latent_dim))

    @property
    def latent_patch(self) -> int:
        return int(getattr(self.inner, "latent_patch", 1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner.decode(z)

    def basis(self) -> torch.Tensor | None:
        fn = getattr(self.inner, "basis", None)
        return fn() if callable(fn) else None

    def fit(self, batches: Iterable[torch.Tensor]) -> dict:
        stats = self.inner.fit(batches) if self.needs_fit else None
        self.fitted.fill_(True)
        return dict(stats or {})

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "plugin": self.plugin}
