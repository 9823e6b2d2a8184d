"""Kill-and-resume exactness of the real CLI: a training subprocess killed (SIGKILL, SIGTERM) and the same
command run again ends where a never-interrupted run ends."""

import json
import os
import signal

import pytest
import torch
from helpers import csv_rows, logged_steps, logged_values, run_cli


def _train_cli(args, cwd, env_extra=None, timeout=240):
    env = {k: v for k, v in os.environ.items() if k != "LDAE_KILL_AT_STEP"}
    env.update(HYDRA_FULL_ERROR="0", LDAE_CACHE=str(cwd / "cache"), **(env_extra or {}))
    return run_cli("ldae-train", *args, timeout=timeout, cwd=cwd, env=env)


ARGS = ["experiment=ldae", "scale=smoke", "baselines=false", "probe.epochs=2"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same smoke run never interrupted (checkpointing does not change training)."""
    tmp = tmp_path_factory.mktemp("ref")
    ref = _train_cli(ARGS + ["checkpoint.every_n_steps=1", f"hydra.run.dir={tmp / 'ref'}", "resume=never"], tmp)
    assert ref.returncode == 0, ref.stderr[-2000:]
    return tmp / "ref"


@pytest.mark.slow  # training subprocesses, killed and run again
@pytest.mark.parametrize("every, resumes_at, position", [(1, 6, {"epoch": 1, "consumed": 2}),
                                                         ("null", 4, {"epoch": 0, "consumed": 4})])
def test_sigkill_mid_epoch_then_the_same_command_resumes_exactly(tmp_path, uninterrupted, every, resumes_at,
                                                                  position):
    """smoke: 4 steps per epoch, 2 epochs. Killed at the start of step 6 (epoch 1, batch 2), then resumed by
    running the same command again; it must end where a never-interrupted run ends. With a checkpoint every
    step it resumes mid-epoch (step 6); with epoch-end checkpoints only, from the end of epoch 0 (step 4)."""
    args = ARGS + [f"checkpoint.every_n_steps={every}"]
    killed = _train_cli(args, tmp_path, {"LDAE_KILL_AT_STEP": "6"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    runs = [p for p in (tmp_path / "outputs").rglob("checkpoints") if p.is_dir()]
    assert len(runs) == 1
    run_dir = runs[0].parent
    assert not (run_dir / "results.json").exists()
    # every-step checkpoints rotated last.ckpt into previous.ckpt; one epoch-end save has nothing to rotate
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == \
        (["last.ckpt", "previous.ckpt"] if every == 1 else ["last.ckpt"])
    half = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert half["global_step"] == resumes_at
    before = csv_rows(run_dir)
    assert sorted(logged_steps(before, "pretrain/loss")) == list(range(6))  # each step's row on disk before the kill
    assert half["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [position]

    resumed = _train_cli(args, tmp_path)  # the same command again
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming the unfinished run" in resumed.stderr + resumed.stdout
    a = torch.load(uninterrupted / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 8
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=0, atol=1e-6, msg=k)
    ra = json.loads((uninterrupted / "results.json").read_text())
    rb = json.loads((run_dir / "results.json").read_text())
    assert rb["resumed_from"].endswith("last.ckpt") and ra["resumed_from"] is None
    for key in ("pretrain_loss", "pretrain_val_loss", "probe_top1", "config_fingerprint"):
        assert ra[key] == pytest.approx(rb[key], abs=1e-6), key
    # The curve across the kill: every step once, with the uninterrupted run's values.
    after, ref = csv_rows(run_dir), csv_rows(uninterrupted)
    for key in ("pretrain/loss", "pretrain/val_loss", "lr-AdamW"):
        assert logged_steps(after, key) == logged_steps(ref, key), key
        for a_row, r_row in zip(logged_values(after, key), logged_values(ref, key)):
            assert a_row == pytest.approx(r_row, abs=1e-6), key
    for key in {k for r in after for k in r} - {"step", "epoch"}:
        steps = logged_steps(after, key)
        assert len(steps) == len(set(steps)), f"{key} logged twice at a step: {steps}"


@pytest.mark.slow  # training subprocesses, killed and run again
def test_sigterm_saves_a_checkpoint_says_how_to_resume_and_exits_143(tmp_path, uninterrupted):
    """SIGTERM at the start of step 5, with epoch-end checkpoints only (the last one at step 4): the step
    that was running ends, is saved (step 6), one line names the checkpoint, exit 143; the same command
    resumes from it and ends as the uninterrupted run does."""
    args = ARGS + ["checkpoint.every_n_steps=null"]
    stopped = _train_cli(args, tmp_path, {"LDAE_KILL_AT_STEP": "5", "LDAE_KILL_SIGNAL": "TERM"})
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    lines = [ln for ln in stopped.stderr.splitlines() if ln.startswith("ldae-train: stopped by SIGTERM")]
    assert len(lines) == 1 and "run the same command again to resume" in lines[0], stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    ckpt = lines[0].split("checkpoint ", 1)[1].split(" (step", 1)[0]
    assert torch.load(ckpt, weights_only=True)["global_step"] == 6 and "(step 6)" in lines[0]
    resumed = _train_cli(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run_dir = os.path.dirname(os.path.dirname(ckpt))
    rb = json.loads(open(os.path.join(run_dir, "results.json")).read())
    ra = json.loads((uninterrupted / "results.json").read_text())
    assert rb["resumed_from"] == ckpt
    for key in ("pretrain_loss", "pretrain_val_loss", "probe_top1"):
        assert ra[key] == pytest.approx(rb[key], abs=1e-6), key
