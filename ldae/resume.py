"""Auto-resume: the same command run again continues the unfinished run of the same config.

A run is identified by a fingerprint of its resolved config (without the keys that only say where to write
or how to display). Each run registers `<cache>/runs/<fingerprint>.json -> run folder` when it starts; a later
run with the same fingerprint whose registered folder has a checkpoint and no results.json continues there.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ldae.utils.io import atomic_write_json

log = logging.getLogger("ldae")

# Keys that do not change what a run computes.
VOLATILE = ("output_dir", "ckpt_path", "resume", "checkpoint", "paths", "trainer.enable_progress_bar", "logger")
LAST_CKPT = Path("checkpoints") / "last.ckpt"


def fingerprint(cfg: DictConfig) -> str:
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    for key in VOLATILE:
        node, *rest = key.split(".")
        if rest and isinstance(data.get(node), dict):
            data[node].pop(rest[0], None)
        elif not rest:
            data.pop(node, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _index(cfg: DictConfig, fp: str) -> Path:
    return Path(cfg.paths.cache_dir) / "runs" / f"{fp}.json"


def find_unfinished(cfg: DictConfig) -> Path | None:
    """The folder of an earlier unfinished run of this config with a checkpoint to continue, if any."""
    entry = _index(cfg, fingerprint(cfg))
    if not entry.exists():
        return None
    try:
        run_dir = Path(json.loads(entry.read_text())["run_dir"])
    except (ValueError, KeyError, OSError):
        log.warning("ignoring an unreadable resume entry %s", entry)
        return None
    if latest_checkpoint(run_dir) is not None and not (run_dir / "results.json").exists():
        return run_dir
    return None


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest of checkpoints/last.ckpt and Lightning's SLURM preemption checkpoints (hpc_ckpt_N.ckpt,
    saved on the requeue signal into the run folder), or None."""
    found = [p for p in [run_dir / LAST_CKPT, *run_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def register(cfg: DictConfig, run_dir: Path) -> str:
    fp = fingerprint(cfg)
    atomic_write_json(_index(cfg, fp), {"run_dir": str(Path(run_dir).resolve()), "name": cfg.name})
    return fp
