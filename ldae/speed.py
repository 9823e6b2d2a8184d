"""Speed switches (`speed.*`, conf/speed/): how fast the pretraining step runs, never what it computes.

Each function takes the `speed` config block; PretrainModule and the pretrain stage call them.
"""

from __future__ import annotations

import torch
from torch import nn


def speed_of(cfg) -> dict:
    """The run's speed block (conf/speed/default.yaml; a checkpoint's older config gets it from
    ldae.checkpoints.upgrade_stored_config) as a plain dict."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg.speed, resolve=True) if OmegaConf.is_config(cfg.speed) else dict(cfg.speed)


def set_tf32(enabled: bool) -> None:
    """TF32 tensor cores for fp32 matmuls and convolutions (a process-wide setting)."""
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    torch.set_float32_matmul_precision("high" if enabled else "highest")


def prepare_backbone(backbone: nn.Module, speed: dict) -> nn.Module:
    """Fused attention, activation checkpointing and compile, in place (state-dict keys unchanged).

    Call after the EMA copy is made: the EMA is averaged, never run in the training loop.
    """
    for m in backbone.modules():
        if hasattr(m, "fused_attn"):  # timm Attention: SDPA or the explicit softmax(QK^T)V
            m.fused_attn = bool(speed["fused_attention"])
    if hasattr(backbone, "set_grad_checkpointing"):
        backbone.set_grad_checkpointing(bool(speed["activation_checkpointing"]))
    if speed["compile"]:
        # nn.Module.compile wraps the call, not the module: no `_orig_mod.` in any state_dict.
        backbone.compile(mode=None if speed["compile_mode"] == "default" else speed["compile_mode"],
                         backend=speed["compile_backend"])
    return backbone


def prepare_tokenizer(tokenizer: nn.Module, speed: dict) -> nn.Module:
    if speed["channels_last"] and any(isinstance(m, nn.Conv2d) for m in tokenizer.modules()):
        tokenizer.to(memory_format=torch.channels_last)
    return tokenizer


def adamw_kwargs(speed: dict, params_on_cuda: bool) -> dict:
    """fused (one CUDA kernel for all tensors) or foreach (grouped ops); auto: fused on CUDA only."""
    f = speed["fused_adamw"]
    fused = params_on_cuda if f == "auto" else bool(f)
    return {"fused": True} if fused else {"foreach": True}
