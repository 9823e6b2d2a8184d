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
PREVIOUS_CKPT = Path("checkpoints") / "previous.ckpt"  # the save before last.ckpt (LastCheckpoint keeps it)


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
    """The folder of an earlier unfinished run of this config with a loadable checkpoint to continue, if any."""
    entry = _index(cfg, fingerprint(cfg))
    if not entry.exists():
        return None
    try:
        run_dir = Path(json.loads(entry.read_text())["run_dir"])
    except (ValueError, KeyError, OSError):
        log.warning("ignoring an unreadable resume entry %s", entry)
        return None
    if not (run_dir / "results.json").exists() and latest_checkpoint(run_dir) is not None:
        return run_dir
    return None


def checkpoint_candidates(run_dir: Path) -> list[Path]:
    """checkpoints/last.ckpt, checkpoints/previous.ckpt and Lightning's SLURM preemption checkpoints
    (hpc_ckpt_N.ckpt, saved on the requeue signal into the run folder), newest first."""
    run_dir = Path(run_dir)
    found = [p for p in [run_dir / LAST_CKPT, run_dir / PREVIOUS_CKPT, *run_dir.glob("hpc_ckpt_*.ckpt")]
             if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)


_loadable: dict[tuple, str | None] = {}  # (path, size, mtime) -> None if it loads, else the reason


def checkpoint_problem(path: Path) -> str | None:
    """Why `path` is not a checkpoint that training can resume from (None when it is). A load test: mmap
    reads the zip directory and the pickled structure without the tensor data, so it costs little even for
    a large checkpoint, and a truncated file fails it."""
    import torch

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _loadable:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            _loadable[key] = None if isinstance(blob, dict) and "state_dict" in blob else "no state_dict in it"
        except Exception as e:  # any unreadable file (truncated zip, random bytes, text, a foreign pickle)
            _loadable[key] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
    return _loadable[key]


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest loadable checkpoint of `run_dir`, or None. One that cannot be loaded is moved aside to
    NAME.corrupt (by rank zero; so that the next save does not rotate it into previous.ckpt) with one
    warning naming it, and the next one is tried: a truncated last.ckpt falls back to previous.ckpt, or to
    a fresh start."""
    from ldae.distributed import is_rank_zero

    for path in checkpoint_candidates(run_dir):
        try:
            why = checkpoint_problem(path)
        except FileNotFoundError:  # another rank moved it aside meanwhile
            continue
        if why is None:
            return path
        if is_rank_zero():
            aside = path.with_name(path.name + ".corrupt")
            path.replace(aside)
            log.warning("checkpoint %s cannot be loaded (%s): moved aside to %s; resuming from the previous "
                        "checkpoint if there is one, else starting afresh", path, why, aside.name)
    return None


def register(cfg: DictConfig, run_dir: Path) -> str:
    fp = fingerprint(cfg)
    atomic_write_json(_index(cfg, fp), {"run_dir": str(Path(run_dir).resolve()), "name": cfg.name})
    return fp
