"""Backbones: the DiT-style transformer and its size registry, or a user's own by `model._target_`."""

from __future__ import annotations

from ldae.models.registry import ModelSpec, lookup


def build_backbone(cfg, input_size: int, patch_size: int, in_channels: int, out_channels: int,
                   out_patch_size: int | None = None, num_classes: int = 0, adaln_zero: bool | None = None):
    """cfg: the `model` config node; explicit hidden_size/depth/num_heads/encoder_depth override the registry.
    A node with `_target_` is a user's backbone (ldae.plugins), given the same geometry and sizes."""
    from ldae import plugins

    spec = lookup(cfg.name)  # a "/P" name's patch is applied by the caller (ldae.plan.backbone_geometry)
    depth = cfg.depth if cfg.depth is not None else spec.depth
    kwargs = dict(
        input_size=input_size, patch_size=patch_size, in_channels=in_channels, out_channels=out_channels,
        out_patch_size=out_patch_size,
        hidden_size=cfg.hidden_size or spec.hidden_size, depth=depth, num_heads=cfg.num_heads or spec.num_heads,
        encoder_depth=cfg.encoder_depth if cfg.encoder_depth is not None else
        (spec.encoder_depth if cfg.depth is None else depth // 2),
        mlp_ratio=cfg.mlp_ratio, cond_ratio=cfg.cond_ratio,
        num_classes=num_classes if cfg.class_cond else 0, class_dropout=cfg.class_dropout,
        learn_sigma=cfg.learn_sigma, adaln_zero=cfg.adaln_zero if adaln_zero is None else adaln_zero,
    )
    if plugins.is_plugin(cfg):
        return plugins.build_backbone_plugin(cfg, kwargs)
    from ldae.models.dit import DiT  # torch is imported only when a model is built

    return DiT(**kwargs)


__all__ = ["ModelSpec", "lookup", "build_backbone"]
