"""Atomic file writes: a crash leaves the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any



def _atomic(path: str | os.PathLike, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
