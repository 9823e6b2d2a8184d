"""The commands' front door: compose a config for a command, explain a composition error in one line, and fail with
`prog: error: message` and exit code 2 (no traceback). The checks themselves live in ldae/config.py."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

from omegaconf import DictConfig

from ldae.config import require_complete, validate
from ldae.errors import ConfigError


def _conf_dir() -> Path:
    """The config tree: `ldae/conf` inside an installed wheel (the build maps the repo's `conf/` there);
    the checkout's top-level `conf/` for an editable install or a plain checkout on sys.path."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return packaged if (packaged / "train.yaml").is_file() else here.parent / "conf"


CONF_DIR = _conf_dir()


def searchpath_dirs(overrides: list[str]) -> list[Path]:
    """The local folders a `hydra.searchpath=[...]` override adds (file:// or pkg:// entries, as Hydra
    reads them), so that the precheck knows the options a user's own config folder brings."""
    dirs: list[Path] = []
    for ov in overrides:
        key, _, value = ov.lstrip("+").partition("=")
        if key != "hydra.searchpath":
            continue
        for entry in value.strip().strip("[]").split(","):
            entry = entry.strip().strip("'\"")
            if entry.startswith("file://"):
                dirs.append(Path(entry[len("file://"):]))
            elif entry.startswith("pkg://"):
                import importlib.util

                mod, _, sub = entry[len("pkg://"):].partition("/")
                spec = importlib.util.find_spec(mod.replace("/", "."))
                if spec is not None and spec.submodule_search_locations:
                    dirs.append(Path(list(spec.submodule_search_locations)[0], sub))
            elif entry:
                dirs.append(Path(entry))
    return dirs


def _conf_dirs(conf_dir: Path | list[Path]) -> list[Path]:
    return list(conf_dir) if isinstance(conf_dir, (list, tuple)) else [conf_dir]


def group_options(group: str, conf_dir: Path | list[Path] = CONF_DIR) -> list[str]:
    """Options of a config group, as `group=OPTION` spells them (subfolders included), over every folder."""
    opts = set()
    for d in _conf_dirs(conf_dir):
        root = d / group
        opts |= {str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml")}
    return sorted(opts)


def check_group_overrides(overrides: list[str], conf_dir: Path | list[Path] = CONF_DIR) -> None:
    """`experiment=nope` -> ConfigError listing the options, before Hydra composes anything.
    A `hydra.searchpath=[...]` override among `overrides` adds its folders' options."""
    dirs = _conf_dirs(conf_dir) + searchpath_dirs(overrides)
    for ov in overrides:
        if ov.startswith("-") or "=" not in ov:
            continue
        key, value = ov.lstrip("+~").split("=", 1)
        if "." in key or key.startswith("hydra") or not any((d / key).is_dir() for d in dirs):
            continue
        values = value.split(",") if "," in value and "(" not in value else [value]
        for v in values:
            v = v.strip()
            if v in ("null", "") or any((d / key / f"{v}.yaml").exists() for d in dirs):
                continue
            raise ConfigError(f"unknown {key} '{v}'; allowed: {', '.join(group_options(key, dirs))}")


def _flat_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    out = []
    for k, v in cfg.items_ex(resolve=False) if hasattr(cfg, "items_ex") else cfg.items():
        key = f"{prefix}{k}"
        out.append(key)
        if isinstance(v, DictConfig):
            out += _flat_keys(v, key + ".")
    return out


def explain_compose_error(err: Exception, overrides: list[str]) -> str:
    """Turn Hydra/OmegaConf composition errors into one line that names the bad value."""
    msg = str(err).strip()
    cause = err.__cause__ or err.__context__
    full = f"{msg}\n{cause}" if cause else msg
    if "not in struct" in full or "Could not override" in full or "Could not append" in full:
        bad = None
        for ov in overrides:
            key = ov.lstrip("+~").split("=", 1)[0]
            if f"'{key}'" in full:
                bad = key
        if bad is None and "full_key:" in full:
            bad = full.split("full_key:", 1)[1].split()[0]
        if bad:
            hint = ""
            try:
                keys = _flat_keys(_default_config())
                close = difflib.get_close_matches(bad, keys, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
            except Exception:  # the hint is a courtesy; never fail on it
                pass
            return f"unknown config key '{bad}' (a misspelt key is an error; add a new key with +{bad}=...){hint}"
    if "Missing mandatory value" in full:
        key = full.split("full_key:", 1)[1].split()[0] if "full_key:" in full else "?"
        return f"missing required value '{key}': set it on the command line ({key}=...)"
    return msg.splitlines()[0] if msg else type(err).__name__


_DEFAULT = None


def _default_config() -> DictConfig:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = compose_config([])
    return _DEFAULT


def compose_config(overrides: list[str], config_name: str = "train") -> DictConfig:
    """Compose `conf/<config_name>.yaml` with overrides through Hydra's compose API (no run dir, no chdir)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name=config_name, overrides=overrides)


def unwrap_worker_error(message: str) -> str:
    """A DataLoader worker's exception comes back as 'Caught X in DataLoader worker process N.' plus the worker's
    traceback in its message; the user's line is the original message, the traceback's last line."""
    if "Original Traceback" not in message:
        return message
    last = [ln for ln in message.strip().splitlines() if ln.strip()][-1]
    head, sep, rest = last.partition(": ")
    return rest if sep and " " not in head else last  # drop the 'module.ClassName: ' prefix


def fail(prog: str, message: str, code: int = 2) -> None:
    """Print `prog: error: message` (no traceback) and exit with `code`."""
    message = unwrap_worker_error(message)
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)


def precheck_cli(prog: str, argv: list[str], config_name: str = "train", check=None) -> None:
    """Validate a command line before Hydra starts: unknown group options, misspelt keys, bad values.
    `check(cfg)`: the app's own checks of its composed root config (raising ConfigError).

    Multirun sweeps are checked option by option here and value by value inside each job.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from ldae.extras import check_cli_extras

    # Hydra's own keys stay out of the composed check, except the searchpath: a user's config folder.
    overrides = [a for a in argv if not a.startswith("-")
                 and (not a.startswith("hydra") or a.lstrip("+").startswith("hydra.searchpath="))]
    try:
        check_group_overrides(overrides)
        check_cli_extras([a for a in argv if not a.startswith("-")], [CONF_DIR, *searchpath_dirs(overrides)])
        if any(a in ("-m", "--multirun") for a in argv) or any(a.startswith("-") for a in argv):
            return
        try:
            cfg = compose_config(overrides, config_name)
        except (HydraException, OmegaConfBaseException) as e:
            raise ConfigError(explain_compose_error(e, overrides)) from None
        if config_name == "train":
            validate(cfg)
        else:
            require_complete(cfg)
        if check is not None:
            check(cfg)
    except ConfigError as e:
        fail(prog, str(e))
