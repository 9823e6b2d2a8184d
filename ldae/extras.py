"""Optional features and the pip extra each needs: selecting one without it is a one-line error, not an
ImportError from deep inside Hydra or torchmetrics."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import OmegaConf

from ldae.errors import ConfigError

# extra -> (the module it provides, the distribution that provides it)
EXTRAS = {
    "optuna": ("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "fidelity": ("torch_fidelity", "torch-fidelity"),
}
# Hydra options that only a plugin of an extra provides.
_PLUGIN_OPTIONS = {
    ("hydra/sweeper", "optuna"): "optuna",
    ("hydra/launcher", "slurm"): "slurm",
    ("hydra/launcher", "submitit_slurm"): "slurm",
    ("hydra/launcher", "submitit_local"): "slurm",
}


def has_extra(extra: str) -> bool:
    module = EXTRAS[extra][0]
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that is missing, or a module set to None in sys.modules
        return False


def require_extra(extra: str, feature: str) -> None:
    """Raise ConfigError naming the extra that `feature` (as the user typed it) needs, if it is missing."""
    if not has_extra(extra):
        raise ConfigError(f"{feature} needs the '{extra}' extra ({EXTRAS[extra][1]}): pip install ldae[{extra}]")


def _plugin_extras_of(defaults) -> list[tuple[str, str]]:
    """(extra, 'group=option') of the plugin options a config file's defaults list selects."""
    found = []
    for item in defaults or []:
        if not OmegaConf.is_dict(item) and not isinstance(item, dict):
            continue
        for key, value in item.items():
            group = str(key).replace("override", "").strip().lstrip("/")
            extra = _PLUGIN_OPTIONS.get((group, str(value)))
            if extra:
                found.append((extra, f"{group}={value}"))
    return found


def check_cli_extras(overrides: list[str], conf_dirs: list[Path]) -> None:
    """The extras a command line selects: Hydra plugin options given directly (`hydra/launcher=slurm`)
    or through a config that overrides them (`sweep=optuna_lr`)."""
    for ov in overrides:
        if "=" not in ov or ov.startswith("-"):
            continue
        key, value = ov.lstrip("+~").split("=", 1)
        for v in (x.strip() for x in value.split(",")):
            extra = _PLUGIN_OPTIONS.get((key, v))
            if extra:
                require_extra(extra, f"{key}={v}")
                continue
            if "." in key or key.startswith("hydra"):
                continue
            for d in conf_dirs:
                f = d / key / f"{v}.yaml"
                if f.is_file():
                    for extra, what in _plugin_extras_of(OmegaConf.load(f).get("defaults")):
                        require_extra(extra, f"{key}={v} (it selects {what})")
                    break


def check_config_extras(cfg) -> None:
    """The extras a composed run needs (what the command line alone does not show)."""
    g = cfg.get("gen")
    if g is not None and g.get("enabled") and g.fid.get("inception_path"):
        # torchmetrics' FrechetInceptionDistance runs torch-fidelity's InceptionV3.
        require_extra("fidelity", "gen.fid.inception_path (FID)")
