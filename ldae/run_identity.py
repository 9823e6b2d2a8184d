"""Where one run belongs in a comparison of ablations: its family (the wandb group), its point (the wandb
name: a trajectory row or a sweep point), the keys swept to reach it, and tags.

    family  `family` in the config (trajectory rows: "trajectory"; sweep presets: "sweep/NAME"), else the
            experiment's name; `logger.group` overrides it for wandb.
    point   `point` in the config (a preset may build it, e.g. "${tokenizer.name}-d${tokenizer.latent_dim}"),
            else the experiment's name plus the swept values other than the seed ("ldae-latent_dim=16").
    swept   {key: value} of the keys this multirun sweeps (the preset's hydra.sweeper.params and the command
            line's comma/range overrides), the seed included: seeds of one point share its name and are
            aggregated by experiments/report.py.
    tags    the command line's overrides (the keys set away from the family's base config) plus the scale.

Outside a Hydra app (tests, experiments/trajectory.py) nothing is swept and the point is the experiment name.
"""

from __future__ import annotations

import sys

# Overrides that say where or how a run is logged, not what it is: never a tag.
_NOT_TAGS = ("seed", "logger", "hydra", "sweep", "output_dir", "paths", "ckpt_path", "resume")
_WANDB_TAG_MAX = 64  # wandb rejects longer tags


def _hydra():
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get() if HydraConfig.initialized() else None
    except Exception:  # noqa: BLE001 - no Hydra app: a plain run
        return None


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def _is_tag(key: str, cfg) -> bool:
    """A config key or group of this run (not a key of another app's root config, e.g. trajectory.py's
    `steps`), and not one that only says where or how the run is logged."""
    from ldae.cli import CONF_DIR

    top = key.split(".")[0].split("/")[0]
    return top not in _NOT_TAGS and (top in cfg or (CONF_DIR / top).is_dir())


def swept_keys(hc=None, argv: list[str] | None = None) -> list[str]:
    """Keys this multirun sweeps: the preset's `hydra.sweeper.params` and the command line's sweep overrides."""
    hc = hc if hc is not None else _hydra()
    if hc is None:
        return []
    keys = list((hc.sweeper.get("params") or {}).keys()) if "sweeper" in hc else []
    argv = sys.argv[1:] if argv is None else argv
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides([a for a in argv if "=" in a and not a.startswith("-")])
        keys += [o.key_or_group for o in parsed if o.is_sweep_override()]
    except Exception:  # noqa: BLE001 - an unparsable command line (a submitit job's own argv): the preset's keys
        pass
    return list(dict.fromkeys(k for k in keys if not k.startswith("hydra")))


def task_overrides(hc=None) -> list[str]:
    hc = hc if hc is not None else _hydra()
    return list(hc.overrides.task) if hc is not None else []


def identity(cfg, hc=None, argv: list[str] | None = None) -> dict:
    """{family, group, point, swept, tags} of the run `cfg` (see the module docstring)."""
    hc = hc if hc is not None else _hydra()
    overrides = task_overrides(hc)
    values = {_key(o): o.split("=", 1)[1] for o in overrides if "=" in o}
    swept = {k: values[k] for k in swept_keys(hc, argv) if k in values}
    family = cfg.get("family") or cfg.name
    wandb_group = cfg.logger.get("group") if "logger" in cfg else None
    point = cfg.get("point")
    if not point:
        extra = [f"{k.split('.')[-1]}={v}" for k, v in swept.items() if k not in ("seed", "experiment")]
        point = "-".join([str(cfg.name), *extra])
    tags = [o.lstrip("+~") for o in overrides if _is_tag(_key(o), cfg)]
    tags.append(f"scale={cfg.scale_name}")
    tags = [t[:_WANDB_TAG_MAX] for t in dict.fromkeys(tags)]
    return {"family": str(family), "group": str(wandb_group or family), "point": str(point), "swept": swept,
            "tags": tags}
