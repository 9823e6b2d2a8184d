"""A DiT-style transformer with an encoder/decoder split (PAPER.md 2.4; Peebles & Xie's DiT).

Input: a spatial map (B, C_in, H, W): pixels (C=3, patch p), or a latent map (C=d, patch 1 or 2).
Conditioning c = t-embedding (+ label embedding): its width is `cond_ratio` × hidden (1 = DiT, 1/4 = the
paper's memory-saving change). Every block modulates its two LayerNorms with shift/scale and gates its two
branches, from c (adaLN; zero-initialised = adaLN-Zero, so a fresh block is the identity).
Parameter names follow DiT's (x_embedder, t_embedder.mlp, y_embedder.embedding_table, blocks.N.adaLN_modulation,
final_layer) so the official checkpoints load with strict=True at cond_ratio 1 (tests/unit/test_dit_checkpoint.py).
Official checkpoints are conditioned on DDPM's step index k = t − 1 (ldae.diffusion.sampling: t_offset=-1).
learn_sigma doubles the output channels: [prediction | v], v interpolating the log variance (improved DDPM).
"""

from __future__ import annotations

import math

import torch
from timm.layers import Attention, Mlp, PatchEmbed
from torch import nn
from torch.utils.checkpoint import checkpoint

from ldae import rules
from ldae.ops.patch import unpatchify


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, N, D); shift, scale (B, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """pos (M,) -> (M, dim): [sin | cos] of pos at dim/2 frequencies 1/10000^(2i/dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos.double()[:, None] * omega[None]  # (M, dim/2)
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos positional embedding (grid*grid, dim): half the channels encode x, half y."""
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, xs.flatten()), sincos_1d(dim // 2, ys.flatten())], 1).float()


class TimestepEmbedder(nn.Module):
    """t -> 256-dim sinusoid (128 frequencies, [cos, sin], max period 10000) -> 2-layer MLP -> (B, width)."""

    def __init__(self, width: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    @staticmethod
    def sinusoid(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]  # (B, half)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.sinusoid(t, self.freq_dim))


class LabelEmbedder(nn.Module):
    """Class label -> (B, width); index `num_classes` is the null class (classifier-free guidance, probing)."""

    def __init__(self, num_classes: int, width: int, dropout: float):
        super().__init__()
        self.num_classes, self.dropout = num_classes, dropout
        self.embedding_table = nn.Embedding(num_classes + int(dropout > 0), width)

    def forward(self, y: torch.Tensor, train: bool) -> torch.Tensor:
        if train and self.dropout > 0:
            drop = torch.rand(y.shape[0], device=y.device) < self.dropout
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.embedding_table(y)


class DiTBlock(nn.Module):
    def __init__(self, width: int, heads: int, cond_width: int, mlp_ratio: float = 4.0, attn_drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, num_heads=heads, qkv_bias=True, attn_drop=attn_drop)  # SDPA inside
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(width, int(width * mlp_ratio), act_layer=lambda: nn.GELU(approximate="tanh"))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_width, 6 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x (B, N, D), c (B, C)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)  # 6 x (B, D)
        x = x + gate1.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    def __init__(self, width: int, patch_size: int, out_channels: int, cond_width: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_width, 2 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, N, p*p*C_out)


class DiT(nn.Module):
    def __init__(self, input_size: int, patch_size: int, in_channels: int, out_channels: int | None = None,
                 out_patch_size: int | None = None, hidden_size: int = 1024, depth: int = 24, num_heads: int = 16, encoder_depth: int | None = None,
                 mlp_ratio: float = 4.0, cond_ratio: float = 0.25, num_classes: int = 0,
                 class_dropout: float = 0.1, learn_sigma: bool = False, adaln_zero: bool = True):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels, self.patch_size = in_channels, patch_size
        # The output may live in another space than the input (image in, latent out): its own patch size.
        self.out_patch_size = patch_size if out_patch_size is None else out_patch_size
        self.out_channels = out_channels * (2 if learn_sigma else 1)
        self.learn_sigma, self.adaln_zero = learn_sigma, adaln_zero
        rules.check_encoder_depth(encoder_depth, depth)
        self.encoder_depth = depth // 2 if encoder_depth is None else encoder_depth
        self.hidden_size, self.depth, self.num_heads = hidden_size, depth, num_heads
        cond_width = max(1, int(round(hidden_size * cond_ratio)))
        self.cond_width = cond_width

        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size, bias=True)
        self.grid = input_size // patch_size
        self.t_embedder = TimestepEmbedder(cond_width)
        self.y_embedder = LabelEmbedder(num_classes, cond_width, class_dropout) if num_classes > 0 else None
        # Fixed sin-cos embedding; a Parameter (frozen) as in DiT, so checkpoints carry it.
        self.pos_embed = nn.Parameter(sincos_2d(hidden_size, self.grid)[None], requires_grad=False)  # (1, N, D)
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, cond_width, mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, self.out_patch_size, self.out_channels, cond_width)
        self.grad_checkpointing = False  # speed.activation_checkpointing: recompute blocks in backward
        self.initialize_weights()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def run_block(self, blk: DiTBlock, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """One block; with grad_checkpointing its activations are recomputed in backward, not stored."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(blk, h, c, use_reentrant=False)
        return blk(h, c)

    def initialize_weights(self) -> None:
        def _basic(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

        self.apply(_basic)
        w = self.x_embedder.proj.weight  # a conv is a linear map on flattened patches
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        if self.adaln_zero:
            # adaLN-Zero: every block starts as the identity, the output layer at zero.
            for blk in self.blocks:
                nn.init.zeros_(blk.adaLN_modulation[-1].weight)
                nn.init.zeros_(blk.adaLN_modulation[-1].bias)
            nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
            nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
            nn.init.zeros_(self.final_layer.linear.weight)
            nn.init.zeros_(self.final_layer.linear.bias)

    def condition(self, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """c = t-embedding (+ label embedding): (B, cond_width). Without y, a conditional model gets the null class."""
        c = self.t_embedder(t)  # (B, C)
        if self.y_embedder is not None:
            if y is None:
                y = self.null_labels(t.shape[0], t.device)
            c = c + self.y_embedder(y, self.training)
        return c

    def null_labels(self, n: int, device=None) -> torch.Tensor:
        """(n,) labels of the null class (index num_classes): what probing and unconditional sampling feed."""
        if self.y_embedder is None or self.y_embedder.embedding_table.num_embeddings == self.y_embedder.num_classes:
            raise ValueError("this backbone has no null class: it needs class_cond with model.class_dropout > 0")
        return torch.full((n,), self.y_embedder.num_classes, dtype=torch.long, device=device)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, p*p*C) -> (B, C, H, W)."""
        return unpatchify(x, self.out_patch_size, self.out_channels, (self.grid, self.grid))

    def encode(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
               depth: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the first `depth` blocks (default: the encoder). Returns tokens (B, N, D) and c (B, C)."""
        c = self.condition(t, y)
        h = self.x_embedder(x) + self.pos_embed  # (B, N, D)
        for blk in self.blocks[: self.encoder_depth if depth is None else depth]:
            h = self.run_block(blk, h, c)
        return h, c

    def forward_features(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                         depth: int | None = None) -> torch.Tensor:
        """Global-average-pooled encoder output (B, D): the representation the probe reads."""
        return self.encode(x, t, y, depth)[0].mean(1)

    def block_features(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None,
                       depths: list[int]) -> torch.Tensor:
        """Pooled tokens after each of `depths` blocks from one forward (B, K, D): a probe grid over split
        points (PAPER.md App. A) costs one pass, not one per block."""
        c = self.condition(t, y)
        h = self.x_embedder(x) + self.pos_embed  # (B, N, D)
        feats = [h.mean(1)] if 0 in depths else []
        for k, blk in enumerate(self.blocks[: max(depths)], start=1):
            h = self.run_block(blk, h, c)
            if k in depths:
                feats.append(h.mean(1))
        return torch.stack(feats, dim=1)  # (B, K, D), in the order of sorted(set(depths))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C_in, H, W), t (B,) -> prediction (B, C_out, H, W)."""
        h, c = self.encode(x, t, y)
        for blk in self.blocks[self.encoder_depth:]:
            h = self.run_block(blk, h, c)
        return self.unpatchify(self.final_layer(h, c))
