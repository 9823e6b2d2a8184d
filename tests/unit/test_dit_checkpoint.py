"""Official-DiT checkpoint format: names/shapes load with strict=True, and the weights mean what DiT's do.

The expected key list and the reference forward below are written from the published DiT architecture
(Peebles & Xie 2023, section 3): patch embedding, fixed 2-D sin-cos positions, 256-d [cos, sin] timestep
sinusoid + 2-layer SiLU MLP, label table with a null row, adaLN-Zero blocks (6 modulation vectors: shift,
scale, gate for attention then MLP), final adaLN layer, patches unfolded as (p, p, C).
"""

import math

import torch
import torch.nn.functional as F
from helpers import expected_shapes

from ldae.models import lookup
from ldae.models.dit import DiT


def test_dit_s2_official_format_loads_strict():
    """DiT-S/2 on 32x32x4 latents, learned sigma (8 output channels), 1000 classes + the null class."""
    spec = lookup("DiT-S/2")
    assert (spec.hidden_size, spec.depth, spec.num_heads, spec.patch_size) == (384, 12, 6, 2)
    shapes = expected_shapes(384, 12, 4, 8, 2, 16, 1000)
    sd = {k: torch.full(s, 0.01) for k, s in shapes.items()}  # a checkpoint file's contents, by name and shape
    with torch.device("meta"):  # no init cost: every tensor comes from the state dict
        m = DiT(input_size=32, patch_size=2, in_channels=4, hidden_size=384, depth=12, num_heads=6,
                cond_ratio=1.0, num_classes=1000, class_dropout=0.1, learn_sigma=True)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == shapes
    m.load_state_dict(sd, strict=True, assign=True)
    m.eval()
    out = m(torch.randn(2, 4, 32, 32), torch.tensor([0, 999]), torch.tensor([3, 1000]))
    assert out.shape == (2, 8, 32, 32)


def test_registry_dit_names():
    for size, (w, depth) in {"S": (384, 12), "B": (768, 12), "L": (1024, 24), "XL": (1152, 28)}.items():
        for p in (2, 4, 8):
            s = lookup(f"DiT-{size}/{p}")
            assert (s.hidden_size, s.depth, s.patch_size) == (w, depth, p)
    assert lookup("DiT-L").patch_size is None


def _ln(x):
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def reference_forward(sd, x, t, y, patch, heads, out_ch):
    """DiT's forward written from the paper, on a plain state dict."""
    B, C, H, W = x.shape
    hidden = sd["x_embedder.proj.bias"].shape[0]
    # tokens: a patch-sized stride conv, row-major over the grid, plus fixed positions
    h = F.conv2d(x, sd["x_embedder.proj.weight"], sd["x_embedder.proj.bias"], stride=patch)
    h = h.flatten(2).transpose(1, 2) + sd["pos_embed"]  # (B, N, D)
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half) / half)
    arg = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(arg), torch.sin(arg)], 1)
    temb = F.linear(F.silu(F.linear(emb, sd["t_embedder.mlp.0.weight"], sd["t_embedder.mlp.0.bias"])),
                    sd["t_embedder.mlp.2.weight"], sd["t_embedder.mlp.2.bias"])
    c = temb + sd["y_embedder.embedding_table.weight"][y]
    i = 0
    while f"blocks.{i}.attn.qkv.weight" in sd:
        b = lambda n: sd[f"blocks.{i}.{n}"]  # noqa: E731
        mod = F.linear(F.silu(c), b("adaLN_modulation.1.weight"), b("adaLN_modulation.1.bias"))
        sh1, sc1, g1, sh2, sc2, g2 = [v[:, None] for v in mod.chunk(6, 1)]
        a = _ln(h) * (1 + sc1) + sh1
        qkv = F.linear(a, b("attn.qkv.weight"), b("attn.qkv.bias")).view(B, -1, 3, heads, hidden // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hidden // heads), -1) @ v
        att = att.transpose(1, 2).reshape(B, -1, hidden)
        h = h + g1 * F.linear(att, b("attn.proj.weight"), b("attn.proj.bias"))
        a = _ln(h) * (1 + sc2) + sh2
        mlp = F.linear(F.gelu(F.linear(a, b("mlp.fc1.weight"), b("mlp.fc1.bias")), approximate="tanh"),
                       b("mlp.fc2.weight"), b("mlp.fc2.bias"))
        h = h + g2 * mlp
        i += 1
    mod = F.linear(F.silu(c), sd["final_layer.adaLN_modulation.1.weight"], sd["final_layer.adaLN_modulation.1.bias"])
    sh, sc = [v[:, None] for v in mod.chunk(2, 1)]
    o = F.linear(_ln(h) * (1 + sc) + sh, sd["final_layer.linear.weight"], sd["final_layer.linear.bias"])
    g = H // patch
    o = o.view(B, g, g, patch, patch, out_ch).permute(0, 5, 1, 3, 2, 4)  # (B, C, gh, p, gw, p)
    return o.reshape(B, out_ch, H, W)


def test_forward_semantics_match_reference():
    g = torch.Generator().manual_seed(1)
    shapes = expected_shapes(64, 2, 4, 8, 2, 4, 10)
    sd = {k: torch.randn(s, generator=g) * (0.2 if k != "pos_embed" else 1.0) for k, s in shapes.items()}
    m = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, cond_ratio=1.0,
            num_classes=10, class_dropout=0.1, learn_sigma=True)
    m.load_state_dict(sd, strict=True)
    m.eval()
    x, t, y = torch.randn(3, 4, 8, 8, generator=g), torch.tensor([0, 17, 999]), torch.tensor([2, 10, 7])
    out, ref = m(x, t, y), reference_forward(sd, x, t, y, 2, 4, 8)
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_fixed_positions_are_2d_sincos():
    """pos_embed[row r, col c]: [sin(c ω) | cos(c ω) | sin(r ω) | cos(r ω)], ω_k = 10000^(−k / (D/4))."""
    D, grid = 32, 4
    m = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=D, depth=2, num_heads=2)
    pe = m.pos_embed[0]
    assert not m.pos_embed.requires_grad
    omega = 1.0 / 10000 ** (torch.arange(D // 4) / (D // 4))
    for r in range(grid):
        for c in range(grid):
            ref = torch.cat([torch.sin(c * omega), torch.cos(c * omega), torch.sin(r * omega), torch.cos(r * omega)])
            assert torch.allclose(pe[r * grid + c], ref, atol=1e-6)
