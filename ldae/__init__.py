"""ldae: deconstructing a Diffusion Transformer into l-DAE, one ablation at a time."""

__version__ = "0.1.0"

from ldae import distributed as _distributed  # noqa: E402,F401  registers ${run_stamp:} for the run folders
