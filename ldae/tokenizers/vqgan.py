"""`tokenizer=vqgan`: the LDM/DiT convolutional KL-autoencoder ("VQGAN" in the paper, PAPER.md 2.2).

The network is diffusers' `AutoencoderKL`, so the public SD-VAE weights DiT uses load from a local folder
(`pretrained_path`, the `save_pretrained` layout: config.json + weights). Nothing is downloaded.

Geometry: stride s = patch_size / dit_patch (8 at the paper's 16 px tokens with DiT patch 2; 4 at scale=cpu;
2 at scale=smoke), so the latent map (B, C, H/s, W/s) patchified by the DiT with patch `dit_patch` gives the
same token grid as the patch tokenizers. Per-token d = C × dit_patch² (the paper's d = 4 × channels):
C = max(1, round(d_eff / dit_patch²)) (ldae.plan.vqgan_geometry), and the d actually used is reported.
"""

from __future__ import annotations

import math
import os

import torch

from ldae.plan import vqgan_geometry
from ldae.tokenizers.trainable import TrainableTokenizer


class ConvVAE(TrainableTokenizer):
    name = "vqgan"
    variational = True

    def __init__(self, patch_size: int, latent_dim: int, *, dit_patch: int, block_channels, layers_per_block: int,
                 norm_groups: int, mid_attention: bool, pretrained_path: str | None, **kw):
        stride, C = vqgan_geometry(patch_size, dit_patch, latent_dim)
        self.dit_patch, self.stride = dit_patch, stride
        self.pretrained_path = pretrained_path
        super().__init__(patch_size, C * dit_patch**2, **kw)
        self._C = C
        from diffusers import AutoencoderKL

        if pretrained_path:
            if not os.path.isfile(os.path.join(pretrained_path, "config.json")):
                raise ValueError(f"tokenizer.pretrained_path={pretrained_path} holds no config.json; expected a "
                                 f"folder written by AutoencoderKL.save_pretrained (e.g. stabilityai/sd-vae-ft-ema)")
            config = AutoencoderKL.load_config(pretrained_path, local_files_only=True)
            vae = AutoencoderKL.from_config(config)
            got_stride = 2 ** (len(config["block_out_channels"]) - 1)
            if got_stride != stride or config["latent_channels"] != C:
                raise ValueError(f"tokenizer.pretrained_path={pretrained_path} has stride {got_stride} and "
                                 f"{config['latent_channels']} latent channels; this config needs stride {stride} "
                                 f"and {C} channels (latent_dim={self.latent_dim}, patch_size={patch_size})")
        else:
            n = int(math.log2(stride)) + 1  # each block but the last halves the resolution
            ch = list(block_channels)
            if len(ch) < n:
                raise ValueError(f"tokenizer.block_channels={ch} has {len(ch)} entries; stride {stride} needs {n}")
            ch = ch[:n]
            vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                                up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(ch),
                                layers_per_block=layers_per_block, latent_channels=C, norm_num_groups=norm_groups,
                                mid_block_add_attention=mid_attention)
        self.vae = vae
        self._init_norm()

    @property
    def latent_channels(self) -> int:
        return self._C

    @property
    def latent_patch(self) -> int:
        return self.dit_patch

    def grid(self, image_size: int) -> tuple[int, int]:
        return (image_size // self.stride, image_size // self.stride)

    def prepare(self) -> dict:
        if not self.pretrained_path:
            return {"pretrained": False}
        from diffusers import AutoencoderKL

        loaded = AutoencoderKL.from_pretrained(self.pretrained_path, local_files_only=True)
        self.vae.load_state_dict(loaded.state_dict())
        self.train_cfg["steps"] = 0  # public weights are used as they are
        return {"pretrained": True, "pretrained_path": self.pretrained_path}

    def posterior(self, x: torch.Tensor):
        dist = self.vae.encode(x).latent_dist  # (B, C, H/s, W/s) moments
        return dist.mean, dist.logvar

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).sample

    def last_layer(self) -> torch.Tensor:
        return self.vae.decoder.conv_out.weight

    def random_backbone(self) -> bool:
        return super().random_backbone() and not self.pretrained_path
