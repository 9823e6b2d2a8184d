"""Never lose a run: resumable order, atomic writes, non-finite losses, interrupts in process, the resume registry
(kill-and-resume of the real CLI: tests/cli/test_kill_resume.py)."""

import json
import math
import os
import signal

import pytest
import torch
from helpers import csv_rows, logged_steps, logged_values

from ldae.data.sampling import EpochBatchSampler
from ldae.lit.checkpointing import AtomicCheckpointIO, clean_key, rng_states, set_rng_states
from ldae.utils.io import atomic_torch_save, atomic_write_json


def test_sampler_order_is_keyed_on_seed_and_epoch_and_resumes_mid_epoch():
    s = EpochBatchSampler(100, 8, seed=3)
    s.set_epoch(2)
    full = list(s)
    assert len(full) == len(s) == 12 and all(len(b) == 8 for b in full)
    assert len({i for b in full for i in b}) == 96  # no repeats within an epoch
    again = EpochBatchSampler(100, 8, seed=3)
    again.set_epoch(2)
    again.skip = 5
    assert list(again) == full[5:]  # a resumed epoch continues where the killed one stopped
    again.set_epoch(3)  # the next epoch starts from its first batch
    assert len(list(again)) == 12 and list(again) != full
    other = EpochBatchSampler(100, 8, seed=4)
    other.set_epoch(2)
    assert list(other) != full


def test_sampler_ranks_split_one_global_order():
    one = EpochBatchSampler(64, 8, seed=0)
    one.set_epoch(1)
    order = one.order().tolist()
    parts = []
    for r in range(4):
        s = EpochBatchSampler(64, 2, seed=0, rank=r, world_size=4)
        s.set_epoch(1)
        parts.append(s.order().tolist())
        assert len(s) == 8
    assert sorted(sum(parts, [])) == sorted(order)
    assert [parts[r][0] for r in range(4)] == order[:4]


def test_atomic_write_keeps_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"probe_top1": 1.0})
    ckpt = tmp_path / "last.ckpt"
    atomic_torch_save(ckpt, {"w": torch.ones(3)})

    def boom(obj, f, *a, **k):
        f.write(b"half a checkpoi")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save(ckpt, {"w": torch.zeros(3)})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})  # not JSON: fails before anything is replaced
    assert json.loads(path.read_text()) == {"probe_top1": 1.0}
    monkeypatch.undo()
    assert torch.equal(torch.load(ckpt, weights_only=True)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "results.json"]  # no temporary left


def test_checkpoint_io_writes_clean_keys(tmp_path):
    assert clean_key("backbone._orig_mod.blocks.0.attn.qkv.weight") == "backbone.blocks.0.attn.qkv.weight"
    assert clean_key("module.backbone.x") == "backbone.x"
    assert clean_key("ema.module.blocks.0.mlp.fc1.bias") == "ema.module.blocks.0.mlp.fc1.bias"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"module.backbone._orig_mod.w": torch.ones(1)},
                                         "global_step": 3}, tmp_path / "c.ckpt")
    loaded = torch.load(tmp_path / "c.ckpt", weights_only=True)
    assert list(loaded["state_dict"]) == ["backbone.w"] and loaded["global_step"] == 3


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(0)
    atomic_torch_save(tmp_path / "rng.pt", rng_states())
    a = (torch.rand(3), random.random(), np.random.rand())
    set_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_nonfinite_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(compose, tmp_path, monkeypatch):
    from ldae.diffusion.objectives import Objective
    from ldae.lit.pretrain import NonFiniteLossError
    from ldae.train import run

    real, calls = Objective.__call__, {"n": 0}

    def nan_at_step_5(self, *a, **k):
        loss, terms = real(self, *a, **k)
        if torch.is_grad_enabled():  # training steps only, not validation
            calls["n"] += 1
            if calls["n"] == 5:
                loss = loss * float("nan")
        return loss, terms

    monkeypatch.setattr(Objective, "__call__", nan_at_step_5)
    cfg = compose("checkpoint.every_n_steps=1", "resume=never", "baselines=false")
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 4 \(epoch 1\)"):
        run(cfg, tmp_path / "stop")
    good = torch.load(tmp_path / "stop" / "checkpoints" / "last.ckpt", weights_only=True)
    assert good["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in good["state_dict"].values() if v.is_floating_point())

    calls["n"] = 0
    res = run(compose("optim.on_nonfinite=skip", "resume=never", "baselines=false"), tmp_path / "skip")
    assert res["skipped_steps"] == 1 and res["steps"] == 8  # the skipped step updates nothing (no gradients)
    assert math.isfinite(res["pretrain_loss"]) and res["pretrain_loss"] > 0  # the NaN step left no trace
    kept = torch.load(tmp_path / "skip" / "checkpoints" / "last.ckpt", weights_only=True)
    assert kept["global_step"] == 8
    assert all(torch.isfinite(v).all() for v in kept["state_dict"].values() if v.is_floating_point())


def test_resume_prefers_the_newest_checkpoint(tmp_path, compose):
    import time

    from ldae.resume import find_unfinished, latest_checkpoint, register

    cfg = compose("paths.cache_dir=" + str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    assert latest_checkpoint(run_dir) is None
    register(cfg, run_dir)
    assert find_unfinished(cfg) is None  # registered, but nothing to continue from yet
    atomic_torch_save(run_dir / "checkpoints" / "last.ckpt", {"state_dict": {}})
    assert find_unfinished(cfg) == run_dir.resolve()
    assert find_unfinished(compose("paths.cache_dir=" + str(tmp_path / "cache"), "seed=1")) is None  # other config
    time.sleep(0.01)
    atomic_torch_save(run_dir / "hpc_ckpt_1.ckpt", {"state_dict": {}})  # SLURM's preemption save comes later
    assert latest_checkpoint(run_dir).name == "hpc_ckpt_1.ckpt"
    atomic_write_json(run_dir / "results.json", {})
    assert find_unfinished(cfg) is None  # finished runs start afresh


def test_a_kill_during_the_probe_keeps_the_losses_and_a_truncated_checkpoint_falls_back(compose, tmp_path,
                                                                                        monkeypatch, caplog):
    """A run killed after pretraining resumes from its final checkpoint, trains nothing, and still reports
    pretrain_loss and pretrain_val_loss; a truncated last.ckpt falls back to previous.ckpt, and with both
    truncated the run starts afresh, each with one warning naming the file."""
    import logging

    import ldae.evaluation
    from ldae.train import run

    cfg = compose("checkpoint.every_n_steps=1", "baselines=false", "probe.epochs=1",
                  f"paths.cache_dir={tmp_path / 'cache'}")
    seen = {}
    real_probe = ldae.evaluation.probe_all

    def killed_in_probe(cfg, module, *a, **k):
        seen["loss"] = module.last_epoch_loss
        raise KeyboardInterrupt("killed during the probe")

    monkeypatch.setattr(ldae.evaluation, "probe_all", killed_in_probe)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "a")
    monkeypatch.setattr(ldae.evaluation, "probe_all", real_probe)
    ckpts = tmp_path / "a" / "checkpoints"
    assert torch.load(ckpts / "previous.ckpt", weights_only=True)["global_step"] == 7
    val = logged_values(csv_rows(tmp_path / "a"), "pretrain/val_loss")[-1]

    res = run(cfg, tmp_path / "b")  # the same config: resumes in a/ from the final checkpoint
    assert res["resumed_from"].endswith("last.ckpt") and res["steps"] == 8
    assert res["pretrain_loss"] == pytest.approx(seen["loss"], abs=1e-7)
    assert res["pretrain_val_loss"] == pytest.approx(val, abs=1e-6)
    assert logged_steps(csv_rows(tmp_path / "a"), "pretrain/loss") == list(range(8))  # the curve is whole

    (tmp_path / "a" / "results.json").unlink()  # unfinished again, with a half-written newest checkpoint
    data = (ckpts / "last.ckpt").read_bytes()
    (ckpts / "last.ckpt").write_bytes(data[: len(data) // 2])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ldae"):
        res = run(cfg, tmp_path / "c")
    bad = [r for r in caplog.records if "cannot be loaded" in r.getMessage()]
    assert len(bad) == 1 and "last.ckpt" in bad[0].getMessage()
    assert res["resumed_from"].endswith("previous.ckpt") and res["steps"] == 8
    assert (ckpts / "last.ckpt.corrupt").is_file() and res["pretrain_loss"] is not None
    assert logged_steps(csv_rows(tmp_path / "a"), "pretrain/loss") == list(range(8))  # step 7 logged once

    (tmp_path / "a" / "results.json").unlink()
    for name in ("last.ckpt", "previous.ckpt"):
        (ckpts / name).write_bytes(b"PK\x03\x04 truncated")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ldae"):
        res = run(cfg, tmp_path / "d")
    assert sum("cannot be loaded" in r.getMessage() for r in caplog.records) == 2
    assert res["resumed_from"] is None and (tmp_path / "d" / "results.json").is_file()  # a fresh start


def test_explicit_ckpt_path_that_cannot_be_loaded_is_one_clear_error(compose, tmp_path):
    from ldae.config import ConfigError
    from ldae.train import resume_point

    bad = tmp_path / "half.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"ckpt_path=.*half.ckpt is not a checkpoint to resume from"):
        resume_point(compose(f"ckpt_path={bad}", f"paths.cache_dir={tmp_path}"), tmp_path / "out")


def test_sigint_during_the_probe_exits_130_and_names_the_final_checkpoint(compose, tmp_path, monkeypatch):
    import ldae.evaluation
    from ldae import signals
    from ldae.train import RunInterrupted, run

    def interrupted_probe(*a, **k):
        signals._handler(signal.SIGINT, None)  # as if Ctrl-C arrived during the probe: raises at once

    monkeypatch.setattr(ldae.evaluation, "probe_all", interrupted_probe)
    with pytest.raises(RunInterrupted, match=r"stopped by SIGINT; checkpoint .*last.ckpt \(step 8\)") as e:
        run(compose("baselines=false", "resume=never"), tmp_path / "run")
    assert e.value.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is not signals._handler  # the handlers are restored


def _entry(cfg, run_dir, **owner):
    """A registry entry for `run_dir` owned by `owner` (host, pid, job) with a heartbeat `age` seconds old."""
    import socket
    import time

    from ldae.resume import _index, fingerprint

    age = owner.pop("age", 0.0)
    own = {"host": socket.gethostname(), "pid": os.getpid(), "start": time.time(), "job": None, **owner}
    atomic_write_json(_index(cfg, fingerprint(cfg)), {"run_dir": str(run_dir), "name": cfg.name, "owner": own,
                                                      "heartbeat": time.time() - age})


def test_an_identical_run_beside_a_live_one_starts_its_own_folder_and_a_dead_owner_is_resumed(
        tmp_path, compose, monkeypatch, caplog):
    import logging
    import subprocess
    import sys

    from ldae.resume import HEARTBEAT_TIMEOUT_S, registry_entry
    from ldae.train import resume_point

    for k in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", "RANK", "LDAE_RUN_DIR"):
        monkeypatch.delenv(k, raising=False)
    cfg = compose(f"paths.cache_dir={tmp_path / 'cache'}")
    first = tmp_path / "first"
    atomic_torch_save(first / "checkpoints" / "last.ckpt", {"state_dict": {}, "global_step": 3})
    before = sorted(p.name for p in first.rglob("*"))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        cases = [  # (owner of the first run, does the second run resume it?)
            ({"pid": live.pid}, False),                                  # alive on this host
            ({"pid": dead.pid}, True),                                   # its PID is gone
            ({"pid": live.pid, "age": HEARTBEAT_TIMEOUT_S + 1}, True),   # silent too long (PID reused)
            ({"host": "elsewhere", "pid": 1}, False),                    # another host, beating
            ({"host": "elsewhere", "pid": 1, "age": HEARTBEAT_TIMEOUT_S + 1}, True),
            ({"host": "elsewhere", "pid": 1, "job": "slurm-77"}, True),  # the same SLURM job, requeued
        ]
        for i, (owner, resumes) in enumerate(cases):
            if owner.get("job"):
                monkeypatch.setenv("SLURM_JOB_ID", "77")
            _entry(cfg, first, **owner)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="ldae"):
                run_dir, ckpt, owned = resume_point(cfg, tmp_path / f"second{i}")
            live_lines = [r for r in caplog.records if "identical run is live" in r.getMessage()]
            if resumes:
                assert run_dir == first.resolve() and ckpt.endswith("last.ckpt") and owned, owner
                assert registry_entry(cfg)["owner"]["pid"] == os.getpid()  # the resumer owns it now
                assert not live_lines
            else:
                assert run_dir == tmp_path / f"second{i}" and ckpt is None and owned, owner
                assert registry_entry(cfg)["owner"]["pid"] == owner["pid"]  # the live run keeps its entry
                assert len(live_lines) == 1 and str(first) in live_lines[0].getMessage()
                side = json.loads(next((tmp_path / "cache" / "runs").glob(f"*.*-{os.getpid()}.json")).read_text())
                assert side["run_dir"] == str(run_dir.resolve()) and side["owner"]["pid"] == os.getpid()
            monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    finally:
        live.kill()
        live.wait()
    assert sorted(p.name for p in first.rglob("*")) == before  # the first run's files untouched


def test_a_dead_side_run_beside_a_live_one_is_resumed(tmp_path, compose, monkeypatch):
    """The second of two identical runs registered itself beside the live first; once it is killed, the next
    identical run continues it (not a third folder), and the live first run's entry stays its own."""
    import socket
    import subprocess
    import sys
    import time

    from ldae.resume import Heartbeat, fingerprint, registry_entry
    from ldae.train import resume_point

    for k in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", "RANK", "LDAE_RUN_DIR"):
        monkeypatch.delenv(k, raising=False)
    cfg = compose(f"paths.cache_dir={tmp_path / 'cache'}")
    fp = fingerprint(cfg)
    first, side = tmp_path / "first", tmp_path / "side"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        _entry(cfg, first, pid=live.pid)
        atomic_torch_save(side / "checkpoints" / "last.ckpt", {"state_dict": {}, "global_step": 5})
        side_entry = tmp_path / "cache" / "runs" / f"{fp}.{socket.gethostname()}-{dead.pid}.json"
        atomic_write_json(side_entry, {"run_dir": str(side.resolve()), "name": cfg.name, "heartbeat": time.time(),
                                       "owner": {"host": socket.gethostname(), "pid": dead.pid, "start": 0,
                                                 "job": None}})
        run_dir, ckpt, owned = resume_point(cfg, tmp_path / "third")
        assert run_dir == side.resolve() and ckpt.endswith("last.ckpt") and owned
        assert registry_entry(cfg)["owner"]["pid"] == live.pid  # the live first run keeps the main entry
        assert not side_entry.exists()
        mine = json.loads((tmp_path / "cache" / "runs" / f"{fp}.{socket.gethostname()}-{os.getpid()}.json")
                          .read_text())
        assert mine["run_dir"] == str(side.resolve())
        t0 = mine["heartbeat"]
        beat = Heartbeat(cfg, interval_s=0.05)  # the side run's heartbeat refreshes its own entry
        time.sleep(0.5)
        beat.stop()
        mine = json.loads((tmp_path / "cache" / "runs" / f"{fp}.{socket.gethostname()}-{os.getpid()}.json")
                          .read_text())
        assert mine["heartbeat"] > t0 and registry_entry(cfg)["owner"]["pid"] == live.pid
    finally:
        live.kill()
        live.wait()


def test_the_ranks_of_one_job_are_one_run(tmp_path, compose, monkeypatch):
    from ldae.train import resume_point

    for k in ("SLURM_JOB_ID", "LDAE_RUN_DIR"):
        monkeypatch.delenv(k, raising=False)
    cfg = compose(f"paths.cache_dir={tmp_path / 'cache'}")
    first = tmp_path / "first"
    atomic_torch_save(first / "checkpoints" / "last.ckpt", {"state_dict": {}})
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    _entry(cfg, first, pid=os.getppid(), job="torchrun-abc")  # rank 0 of this torchrun job, alive
    monkeypatch.setenv("RANK", "1")
    run_dir, ckpt, owned = resume_point(cfg, tmp_path / "rank1")
    assert run_dir == first.resolve() and ckpt.endswith("last.ckpt") and not owned  # follows, never owns
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    monkeypatch.setenv("LDAE_RUN_DIR", str(first))  # a rank Lightning's launcher started into rank 0's folder
    run_dir, ckpt, owned = resume_point(cfg, first)
    assert run_dir == first and ckpt.endswith("last.ckpt") and not owned


def test_the_heartbeat_refreshes_the_owners_entry_until_stopped(tmp_path, compose):
    import time

    from ldae.resume import Heartbeat, register, registry_entry

    cfg = compose(f"paths.cache_dir={tmp_path / 'cache'}")
    register(cfg, tmp_path / "run")
    t0 = registry_entry(cfg)["heartbeat"]
    beat = Heartbeat(cfg, interval_s=0.05)
    time.sleep(0.5)
    beat.stop()
    t1 = registry_entry(cfg)["heartbeat"]
    assert t1 > t0
    time.sleep(0.3)
    assert registry_entry(cfg)["heartbeat"] == pytest.approx(t1, abs=0.06)  # stopped (one last beat at most)


class _FullDisk:
    """os.fdopen for files whose temporary name contains `match`: the `nth` such file and later ones take
    `budget` bytes, then every write raises ENOSPC, as a full device does (the other files open as usual)."""

    def __init__(self, monkeypatch, match: str, nth: int = 1, budget: int = 1000):
        import ldae.utils.io as io_mod

        self.match, self.nth, self.budget, self.seen = match, nth, budget, 0
        real = io_mod.os.fdopen

        def fdopen(fd, *a, **k):
            f = real(fd, *a, **k)
            if self.match not in os.readlink(f"/proc/self/fd/{fd}"):
                return f
            self.seen += 1
            return self._full(f) if self.seen >= self.nth else f

        monkeypatch.setattr(io_mod.os, "fdopen", fdopen)

    def _full(self, f):
        import errno

        budget = self.budget

        class Full:
            left = budget

            def write(self, b):
                if len(b) > self.left:
                    f.write(bytes(b)[: self.left])
                    self.left = 0
                    raise OSError(errno.ENOSPC, "No space left on device")
                self.left -= len(b)
                return f.write(b)

            def __getattr__(self, name):
                return getattr(f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

        return Full()


def test_a_full_disk_is_one_clear_error_and_the_previous_checkpoint_stays(tmp_path, monkeypatch):
    import errno

    from ldae.utils.io import DiskFullError

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(100)}, "global_step": 1}, path)
    before = path.read_bytes()
    _FullDisk(monkeypatch, ".last.ckpt.", budget=300)
    with pytest.raises(DiskFullError) as e:  # torch alone says "RuntimeError: [enforce fail ...] unexpected pos"
        io.save_checkpoint({"state_dict": {"w": torch.zeros(10000)}, "global_step": 2}, path)
    assert e.value.errno == errno.ENOSPC and "\n" not in str(e.value) and "Errno" not in str(e.value)
    assert str(e.value).startswith(f"no space left on the device of {tmp_path} while writing last.ckpt (")
    assert "the previous last.ckpt, if any, is intact" in str(e.value)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert torch.load(path, weights_only=True)["global_step"] == 1

    # A quota at the final fsync is the same error; any other OSError stays what it was.
    def fsync(fd, err=errno.EDQUOT):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr("ldae.utils.io.os.fsync", fsync)
    with pytest.raises(DiskFullError, match="while writing results.json"):
        atomic_write_json(tmp_path / "results.json", {"probe_top1": 1.0})
    monkeypatch.setattr("ldae.utils.io.os.fsync", lambda fd: fsync(fd, errno.EIO))
    with pytest.raises(OSError) as e:
        atomic_write_json(tmp_path / "results.json", {"probe_top1": 1.0})
    assert type(e.value) is OSError and e.value.errno == errno.EIO
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_disk_that_fills_during_pretraining_ends_in_one_line_and_resumes(compose, tmp_path, monkeypatch, capsys):
    """The third checkpoint save hits a full disk: ldae-train's one line (exit 2), last.ckpt is the save before it,
    whole; with space again the same config resumes from last.ckpt and finishes."""
    from ldae.cli import fail
    from ldae.train import one_line_errors, run
    from ldae.utils.io import DiskFullError

    cfg = compose("checkpoint.every_n_steps=1", "baselines=false", "probe.epochs=1",
                  f"paths.cache_dir={tmp_path / 'cache'}")
    with monkeypatch.context() as m:
        _FullDisk(m, ".last.ckpt.", nth=3)
        with pytest.raises(DiskFullError) as e:
            run(cfg, tmp_path / "a")
    assert isinstance(e.value, one_line_errors())
    capsys.readouterr()  # the run's own progress output
    with pytest.raises(SystemExit) as ex:
        fail("ldae-train", str(e.value))
    err = capsys.readouterr().err.strip().splitlines()
    assert ex.value.code == 2 and len(err) == 1 and "while writing last.ckpt" in err[0], err
    ckpts = tmp_path / "a" / "checkpoints"
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 2
    # last.ckpt was linked to previous.ckpt just before the failed write: both are the whole step-2 file.
    assert torch.load(ckpts / "previous.ckpt", weights_only=True)["global_step"] == 2
    assert not list(ckpts.glob(".*.tmp"))
    res = run(cfg, tmp_path / "b")
    assert res["resumed_from"] == str(ckpts / "last.ckpt") and res["steps"] == 8 and res["pretrain_loss"] > 0
