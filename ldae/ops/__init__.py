"""The bottom of the data path: tensor operations that every layer above uses alike (tokenizers, the backbone,
the objective, the Lightning modules), so that none of them imports sideways or up for them.

- `patch`: images <-> patch tokens <-> latent maps (pure reshapes).
- `noise`: noise keyed by (seed, sample, stream), the same on any device count and batch split.
"""
