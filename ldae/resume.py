"""Auto-resume: the same command run again continues the unfinished run of the same config.

A run is identified by a fingerprint of its resolved config (without the keys that only say where to write
or how to display). Each run registers `<cache>/runs/<fingerprint>.json -> run folder` when it starts; a later
run with the same fingerprint whose registered folder has a checkpoint and no results.json continues there.

The entry also names its owner (host, PID, start time, SLURM or torchrun job) and a heartbeat the owner
refreshes every HEARTBEAT_S seconds; decisions and writes happen under an fcntl lock on `<fingerprint>.lock`.
An identical run started while the owner is alive starts in its own folder and registers it beside the entry
(`<fingerprint>.<host>-<pid>.json`, with its own heartbeat), so that it too is resumed once it dies; the owner
counts as dead when its PID is gone on this host or its heartbeat is older than
HEARTBEAT_TIMEOUT_S (a SIGKILL leaves no chance to say so), and its run is then resumed. A SLURM requeue
(same SLURM_JOB_ID) and the ranks of one job are the same run, not a second one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
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


def _sibling(cfg: DictConfig, fp: str) -> Path:
    """This process's entry beside the main one: a second identical run started while the first was alive."""
    me = this_owner()
    return _index(cfg, fp).with_name(f"{fp}.{me['host']}-{me['pid']}.json")


def _dead_sibling(cfg: DictConfig, fp: str) -> tuple[Path, Path, Path] | None:
    """(entry, run folder, checkpoint) of a side run of this config whose owner is dead and whose run is
    unfinished; side entries of finished dead runs are removed on the way."""
    for path in sorted(_index(cfg, fp).parent.glob(f"{fp}.*.json")):
        entry = _read(path)
        if entry is None or live_owner(entry) is not None:
            continue
        run_dir = Path(entry["run_dir"])
        ckpt = None if (run_dir / "results.json").exists() else latest_checkpoint(run_dir)
        if ckpt is not None:
            return path, run_dir, ckpt
        with contextlib.suppress(OSError):
            path.unlink()
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


HEARTBEAT_S = 60.0
HEARTBEAT_TIMEOUT_S = 600.0  # an owner silent for 10 minutes is dead


def job_id() -> str | None:
    """What makes processes one job: a SLURM job (kept across requeues) or a torchrun run; None otherwise."""
    if os.environ.get("SLURM_JOB_ID"):
        return "slurm-" + os.environ["SLURM_JOB_ID"]
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return "torchrun-" + os.environ["TORCHELASTIC_RUN_ID"]
    return None


_STARTED = time.time()


def this_owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _STARTED, "job": job_id()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def live_owner(entry: dict, now: float | None = None) -> dict | None:
    """The entry's owner when it is another run that is alive now, else None (this process, this job, or a
    dead owner). Alive: a heartbeat younger than HEARTBEAT_TIMEOUT_S and, on this host, its PID exists."""
    own = entry.get("owner")
    if not isinstance(own, dict):
        return None  # an entry from before owners were recorded
    me = this_owner()
    if own.get("host") == me["host"] and own.get("pid") == me["pid"]:
        return None
    if own.get("job") and own.get("job") == me["job"]:
        return None  # a requeue of the same SLURM job, or another rank of this torchrun job
    now = time.time() if now is None else now
    if now - float(entry.get("heartbeat") or 0) > HEARTBEAT_TIMEOUT_S:
        return None
    if own.get("host") == me["host"] and not _pid_alive(own.get("pid", -1)):
        return None
    return own


@contextlib.contextmanager
def _locked(cfg: DictConfig, fp: str):
    import fcntl

    lock = _index(cfg, fp).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read(entry: Path) -> dict | None:
    try:
        data = json.loads(entry.read_text())
        return data if isinstance(data, dict) and "run_dir" in data else None
    except (ValueError, OSError):
        return None


def registry_entry(cfg: DictConfig) -> dict | None:
    return _read(_index(cfg, fingerprint(cfg)))


def _write(cfg: DictConfig, fp: str, run_dir: Path, path: Path | None = None) -> None:
    atomic_write_json(path or _index(cfg, fp), {"run_dir": str(Path(run_dir).resolve()), "name": cfg.name,
                                                "owner": this_owner(), "heartbeat": time.time()})


def register(cfg: DictConfig, run_dir: Path) -> str:
    """Record this process as the owner of `run_dir` for this config (under the lock)."""
    fp = fingerprint(cfg)
    with _locked(cfg, fp):
        _write(cfg, fp, run_dir)
    return fp


def claim(cfg: DictConfig, out: Path) -> tuple[Path, Path | None, bool]:
    """(run folder, checkpoint to resume from, whether this run owns the registry entry) for resume=auto on
    rank zero: the dead or finished owner's unfinished run is resumed; a live identical run is left alone."""
    fp = fingerprint(cfg)
    with _locked(cfg, fp):
        entry = _read(_index(cfg, fp))
        side = _dead_sibling(cfg, fp)
        if entry is not None and (owner := live_owner(entry)) is not None:
            if side is not None:  # a dead side run of this config: continue it, beside the live one
                path, run_dir, ckpt = side
                path.unlink()
                _write(cfg, fp, run_dir, _sibling(cfg, fp))
                return run_dir, ckpt, True
            beat = time.time() - float(entry.get("heartbeat") or 0)
            log.warning("an identical run is live in %s (pid %s on %s, heartbeat %.0f s ago): this one starts "
                        "in its own folder %s", entry["run_dir"], owner.get("pid"), owner.get("host"), beat, out)
            _write(cfg, fp, out, _sibling(cfg, fp))
            return out, None, True
        run_dir, ckpt = out, None
        prev = find_unfinished(cfg)
        if prev is not None and (ckpt := latest_checkpoint(prev)) is not None:
            run_dir = prev
        elif side is not None:  # the main entry's run is done or gone; a dead side run is not
            path, run_dir, ckpt = side
            path.unlink()
        _write(cfg, fp, run_dir)
    return run_dir, ckpt, True


class Heartbeat:
    """Refreshes this process's registry entry every HEARTBEAT_S seconds while the run lives."""

    def __init__(self, cfg: DictConfig, interval_s: float = HEARTBEAT_S):
        self.cfg, self.fp, self.interval = cfg, fingerprint(cfg), interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ldae-heartbeat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError), _locked(self.cfg, self.fp):
                for path in (_index(self.cfg, self.fp), _sibling(self.cfg, self.fp)):  # the main entry, or ours
                    entry = _read(path)
                    own = (entry or {}).get("owner") or {}
                    if own.get("pid") == os.getpid() and own.get("host") == socket.gethostname():
                        atomic_write_json(path, {**entry, "heartbeat": time.time()})
                        break
                else:
                    return  # the entry has a new owner (resume=never started over it): stop beating

    def stop(self) -> None:
        self._stop.set()
