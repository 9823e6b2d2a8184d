"""Corruption and objectives: pure tensor functions, no Lightning.

No re-exports here: importing the package must not import torch, so that the config checks can read the
prediction table (`ldae.diffusion.predictions`) before a run starts."""
