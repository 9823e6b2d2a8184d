"""Local weight files that ship inside installed packages (torch-free: config validation reads them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def torchmetrics_lpips_heads(net: str = "vgg") -> Path | None:
    """LPIPS's released per-channel linear heads, which torchmetrics' wheel carries as
    `torchmetrics/functional/image/lpips_models/<net>.pth`; None when torchmetrics lacks them."""
    try:
        spec = importlib.util.find_spec("torchmetrics")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), "functional", "image", "lpips_models", f"{net}.pth")
    return path if path.is_file() else None


def lpips_linear_path(value: str | None) -> str | None:
    """`tokenizer.perceptual.linear_path`: a file as given, or null for torchmetrics' VGG heads (resolved here,
    at run time, so a config and its artifact key do not carry one machine's site-packages path)."""
    if value:
        return str(value)
    heads = torchmetrics_lpips_heads("vgg")
    return str(heads) if heads else None
