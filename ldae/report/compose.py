"""Composing a run's train.yaml config from inside another Hydra app (trajectory, claims) or from a test."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf


def compose_train(overrides: list[str]) -> DictConfig:
    """train.yaml with overrides: through the running Hydra app's compose API, or a fresh one in tests."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        from hydra import compose

        return compose(config_name="train", overrides=overrides)
    from ldae.cli import compose_config

    return compose_config(overrides)


def flatten(node, prefix: str = "") -> list[str]:
    """{'trainer': {'max_epochs': 1}, 'baselines': False} -> ['trainer.max_epochs=1', 'baselines=false']."""
    out = []
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += flatten(v, key + ".")
        else:
            out.append(f"{key}={'null' if v is None else str(v).lower() if isinstance(v, bool) else v}")
    return out


def budget_overrides(cfg: DictConfig) -> list[str]:
    """The per-run budget keys of a root config's `budget.<scale>` node, as override strings (its `note`, a
    sentence for the report, is not a key)."""
    node = (cfg.get("budget") or {}).get(cfg.scale_name)
    if not node:
        return []
    return flatten({k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "note"})


def budget_note(cfg: DictConfig) -> str | None:
    node = (cfg.get("budget") or {}).get(cfg.scale_name)
    return node.get("note") if node else None


def user_overrides(task_overrides: list[str], own_keys: tuple[str, ...], app: str) -> list[str]:
    """The command line's train.yaml overrides: the app's own keys, `experiment`, `sweep` and hydra.* are not
    passed on to the runs (the app sets each run's experiment)."""
    import logging

    keep = []
    for ov in task_overrides:
        key = ov.lstrip("+~").split("=", 1)[0]
        if key.split(".")[0] in own_keys or key in ("experiment", "sweep") or key.startswith("hydra"):
            if key == "experiment":
                logging.getLogger(f"ldae.{app}").warning("ignoring %s: %s sets the experiment of every run", ov, app)
            continue
        keep.append(ov)
    return keep
