"""ldae: deconstructing a Diffusion Transformer into l-DAE, one ablation at a time."""

__version__ = "0.1.0"
