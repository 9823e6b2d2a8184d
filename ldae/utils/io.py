"""Atomic file writes: a crash leaves the old file or the new one, never half of one."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ldae.errors import ConfigError

FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """No space (or quota) left while writing a file atomically: the file's previous version is intact."""

    def __str__(self) -> str:  # the message alone: it is the user's one line
        return str(self.strerror)


class _Recording:
    """A file that keeps the OSError of a failed write: torch's zip writer reports it only as
    'RuntimeError: [enforce fail at inline_container.cc] . unexpected pos'."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, b):
        try:
            return self._f.write(b)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


class FolderError(OSError):
    """A folder the run must write to cannot be written (read-only, not a folder, or too little space)."""

    def __str__(self) -> str:
        return str(self.strerror)


# What each kind of checkpoint file is, for the one line that says a path is not one.
CHECKPOINT_KINDS = {"ldae": "a checkpoint written by ldae-train (RUN_DIR/checkpoints/last.ckpt)",
                    "official": "an official DiT checkpoint file"}


def require_checkpoint_file(ckpt_path: str | os.PathLike, kind: str) -> Path:
    """`ckpt_path` is a file (torch-free, so ldae-probe says so before torch loads); `kind` names what it must be."""
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist; give {CHECKPOINT_KINDS[kind]}")
    return Path(ckpt_path)


def check_writable(folder: str | os.PathLike, key: str, need_bytes: int = 0, need_what: str = "") -> None:
    """Before any work: `folder` (config key `key`) can be created and written, with `need_bytes` free.
    A probe file is written and removed, since permission bits do not tell (root, ACLs, read-only mounts)."""
    import shutil

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ldae-write-test.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise FolderError(e.errno, f"{key}={folder} cannot be written ({e.strerror}); allowed: a folder this user "
                                   f"can create and write") from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise FolderError(errno.ENOSPC, f"{key}={folder} has {free / 2**20:.0f} MiB free; {need_what} needs about "
                                        f"{need_bytes / 2**20:.0f} MiB; allowed: a folder with more free space")


def _disk_full(path: Path, e: OSError) -> DiskFullError:
    import shutil

    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    return DiskFullError(e.errno, f"no space left on the device of {path.parent} while writing {path.name} "
                                  f"({free}); the previous {path.name}, if any, is intact: free some space and run "
                                  f"the same command again to resume")


def _atomic(path: str | os.PathLike, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    rec = None
    try:
        with os.fdopen(fd, "wb") as f:
            rec = _Recording(f)
            write(rec)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        cause = rec.error if rec is not None and rec.error is not None else e
        if isinstance(cause, OSError) and cause.errno in FULL:
            raise _disk_full(path, cause) from None
        raise
    return path


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return _atomic(path, lambda f: f.write((json.dumps(data, indent=2, sort_keys=True) + "\n").encode()))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return _atomic(path, lambda f: f.write(text.encode()))


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    return _atomic(path, lambda f: torch.save(obj, f))


def wait_for_file(path: str | os.PathLike, timeout_s: float, poll_s: float = 1.0, what: str = "") -> float:
    """Block until `path` exists (another rank writes it); returns the seconds waited, TimeoutError after timeout_s."""
    import time

    path, t0 = Path(path), time.time()
    while not path.exists():
        if time.time() - t0 > timeout_s:
            raise TimeoutError(f"waited {timeout_s:.0f} s for {what or path}")
        time.sleep(poll_s)
    return time.time() - t0


def move_aside(path: str | os.PathLike, why: str, log, what: str = "file") -> Path | None:
    """Rename a corrupt cache file to NAME.corrupt (kept for inspection, out of the way of the recomputed one)
    with one warning naming it; None when another process moved it first."""
    path = Path(path)
    aside = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return None
    log.warning("%s %s cannot be loaded (%s): moved aside to %s and recomputed", what, path, why, aside.name)
    return aside


def load_problem(exc: BaseException) -> str:
    """One short line for why a file did not load."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:160]}" if first else type(exc).__name__
