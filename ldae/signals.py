"""SIGTERM and SIGINT end a run in a clear state: a checkpoint where possible, one line, exit 143 / 130.

During pretraining the first signal only raises Lightning's stop flag (Lightning sets it itself for SIGTERM;
SIGINT is routed to the same flag): training stops at the end of the running step, `LastCheckpoint` saves
that step, and Lightning raises its SIGTERMException. Anywhere else (tokenizer fit, probe, feature extraction)
and at a second signal, `Interrupted` is raised at once: the last checkpoint on disk is still whole (writes
are atomic). `ldae-train` turns either into one line naming the checkpoint and how to resume.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_state: dict = {"received": None, "trainer": None}


class Interrupted(BaseException):
    """A run stopped by a signal (BaseException like KeyboardInterrupt: no `except Exception` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def received() -> int | None:
    return _state["received"]


def _handler(signum, frame) -> None:
    first = _state["received"] is None
    _state["received"] = int(signum)
    trainer = _state["trainer"]
    if first and trainer is not None:
        trainer._signal_connector.received_sigterm = True  # stop at the end of this step (SIGINT too)
        return
    raise Interrupted(signum)


def install() -> None:
    """Install the handlers for this run (main thread only; a no-op elsewhere, e.g. in a test's thread)."""
    _state.update(received=None, trainer=None, previous={})
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            _state["previous"][s] = signal.signal(s, _handler)


def uninstall() -> None:
    """Restore the handlers that were there before `install` (the next job of a sweep installs its own)."""
    _state.update(trainer=None)
    for s, h in _state.pop("previous", {}).items():
        if signal.getsignal(s) is _handler:
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def watch(trainer) -> None:
    """The pretraining fit is running: a first signal stops it at the next step end (`lit.checkpointing.StopAtStepEnd`)."""
    _state["trainer"] = trainer


def unwatch() -> None:
    _state["trainer"] = None
