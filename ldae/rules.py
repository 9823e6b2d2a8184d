"""The cross-field rules of the components, torch-free: each is written once here and called both by
`config.validate` (so a bad command line fails in a second) and by the constructor it guards (so a component
built from Python fails with the same line). The package `__init__`s of the components import torch, which is why
the rules sit in this light module rather than beside each class."""

from __future__ import annotations

from ldae.diffusion.predictions import PREDICTION
from ldae.errors import ConfigError


def require(ok: bool, msg: str) -> None:
    """Raise the one-line ConfigError `msg` unless `ok` (config.validate, the plan and the rules share it)."""
    if not ok:
        raise ConfigError(msg)


def is_int(v) -> bool:
    """An int that is not a bool (YAML's true/false load as bools, which are ints to Python)."""
    return isinstance(v, int) and not isinstance(v, bool)


# --- the backbone (ldae/models/dit.py) --------------------------------------------------------------------------
def check_encoder_depth(encoder_depth, depth: int) -> None:
    """The encoder/decoder split: null (half the depth) or a block in 1..depth."""
    require(encoder_depth is None or (is_int(encoder_depth) and 1 <= encoder_depth <= depth),
            f"model.encoder_depth={encoder_depth} is out of range; allowed: null (the registry's split) or "
            f"1..{depth} (the model depth)")


def check_null_class(class_cond: bool, class_dropout: float) -> None:
    """Class conditioning needs dropout > 0: the null class it creates is what the probe and guidance feed."""
    require(not class_cond or class_dropout > 0,
            f"model.class_cond=true needs model.class_dropout > 0 (got {class_dropout}): the null class it "
            f"creates is what the probe and guidance feed")


# --- the objective (ldae/diffusion/objectives.py) ---------------------------------------------------------------
def check_learned_sigma(predict: str, schedule: str | None = None) -> None:
    """A learned-σ output needs a latent prediction (ε or x0) and a schedule with step variances."""
    spec = PREDICTION.get(predict)
    allowed = " or ".join(k for k, p in PREDICTION.items() if p.learned_sigma)
    require(spec is not None and spec.learned_sigma,
            f"model.learn_sigma=true needs target.predict {allowed} (a latent prediction), not '{predict}'")
    require(schedule != "single_level",
            "model.learn_sigma=true needs a multi-level schedule (single_level has no step variances)")


# --- the features the probe reads (ldae/lit/features.py) --------------------------------------------------------
def check_probe_step(t, t_offset, num_steps: int) -> None:
    """The probe's noise level t in 0..T; t_offset (official DiT: −1) shifts only the backbone's conditioning."""
    require(is_int(t) and 0 <= t <= num_steps, f"probe.t={t} must be an integer in 0..{num_steps}")
    require(is_int(t_offset) and t + t_offset >= 0,
            f"probe.t_offset={t_offset} with probe.t={t} conditions the backbone on step {t + t_offset}; allowed: "
            f"an integer with probe.t + probe.t_offset >= 0 (official DiT checkpoints: -1, so probe.t >= 1)")


# --- the patch tokenizers (ldae/tokenizers/pca.py, linear.py) ---------------------------------------------------
def check_token_dim(d, patch_size: int, channels: int = 3) -> None:
    """The per-token d of a patch tokenizer in absolute units: 1..D, D = C p² (the plan checks latent_units=absolute
    with it; the constructors get the effective d)."""
    D = channels * patch_size * patch_size
    require(is_int(d) and 1 <= d <= D, f"tokenizer.latent_dim={d} is out of range; allowed: 1..{D} (the patch "
            f"dimension D = {channels}*{patch_size}*{patch_size})")
