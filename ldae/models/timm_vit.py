"""The fold of a DiT encoder into a plain timm `VisionTransformer` at a fixed t (PAPER.md 2.4).

With t fixed, the t-MLP (and a class-conditional model's null-class embedding) is a constant c, so every
block's shift/scale/gate are constants too: `norm(x) * (1 + scale) + shift` becomes a LayerNorm with weight
1 + scale and bias shift, and `gate * proj(.)` becomes proj with its weight rows and bias scaled by gate. The
rest maps one to one: the patch embedding (timm's PatchEmbed in both), the fixed sin-cos positional embedding
(copied into timm's pos_embed), qkv and the MLP. The features are the global average of the last block's
tokens, with no final norm (our encoder has none): timm's `class_token=False, global_pool='avg',
final_norm=False`. The GELU is the tanh approximation, as in DiT. Used by the export (ldae.timm_export) and
by fine-tuning (ldae.evaluation).
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

from ldae.models.dit import DiT


def vit_kwargs(backbone: DiT, depth: int | None = None) -> dict:
    """timm VisionTransformer arguments that reproduce the first `depth` blocks of `backbone` (plain data)."""
    blk = backbone.blocks[0]
    return {"img_size": backbone.grid * backbone.patch_size, "patch_size": backbone.patch_size,
            "in_chans": backbone.in_channels, "num_classes": 0, "global_pool": "avg",
            "embed_dim": backbone.hidden_size, "depth": backbone.encoder_depth if depth is None else depth,
            "num_heads": backbone.num_heads, "mlp_ratio": blk.mlp.fc1.out_features / backbone.hidden_size,
            "qkv_bias": True, "class_token": False, "no_embed_class": False, "pos_embed": "learn",
            "final_norm": False, "fc_norm": False, "act_layer": "gelu_tanh"}


def build_vit(kwargs: dict, **overrides) -> VisionTransformer:
    return VisionTransformer(**{**kwargs, **overrides})


@torch.no_grad()
def fold_encoder(backbone: DiT, t: int, depth: int | None = None) -> tuple[dict, dict]:
    """(timm state dict, timm kwargs) of the encoder at timestep t (a class-conditional model: the null class)."""
    kwargs = vit_kwargs(backbone, depth)
    if not 1 <= kwargs["depth"] <= backbone.depth:
        raise ValueError(f"block={depth} is out of range; allowed: 1..{backbone.depth} (the model depth)")
    was = backbone.training
    backbone.eval()  # no label dropout while computing the constant condition
    c = backbone.condition(torch.tensor([t], device=backbone.pos_embed.device))  # (1, C)
    backbone.train(was)
    emb = backbone.x_embedder.proj
    sd = {"pos_embed": backbone.pos_embed.detach().clone(),  # (1, N, D) fixed sin-cos
          "patch_embed.proj.weight": emb.weight.detach().clone(), "patch_embed.proj.bias": emb.bias.detach().clone()}
    for i, blk in enumerate(backbone.blocks[: kwargs["depth"]]):
        mod = blk.adaLN_modulation(c)[0].double()  # (6D,)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6)  # 6 x (D,)
        p = f"blocks.{i}."
        for norm, shift, scale in (("norm1", shift1, scale1), ("norm2", shift2, scale2)):
            sd[p + norm + ".weight"] = (1 + scale).float()
            sd[p + norm + ".bias"] = shift.float()
        sd[p + "attn.qkv.weight"] = blk.attn.qkv.weight.detach().clone()
        sd[p + "attn.qkv.bias"] = blk.attn.qkv.bias.detach().clone()
        sd[p + "mlp.fc1.weight"] = blk.mlp.fc1.weight.detach().clone()
        sd[p + "mlp.fc1.bias"] = blk.mlp.fc1.bias.detach().clone()
        for lin, gate in (("attn.proj", gate1), ("mlp.fc2", gate2)):
            layer = blk.get_submodule(lin)
            sd[p + lin + ".weight"] = (gate[:, None] * layer.weight.double()).float()  # (D_out, D_in) rows x gate
            sd[p + lin + ".bias"] = (gate * layer.bias.double()).float()
    return sd, kwargs
