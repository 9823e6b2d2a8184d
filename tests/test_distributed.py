"""DDP on 2 CPU processes (gloo): the same loss as one process, one run folder per job, `-m` runs each job once."""

import csv
import json
import os
import sys
from pathlib import Path

import pytest

WT = str(Path(__file__).resolve().parent.parent)
# Lean smoke runs: one pretraining epoch (4 steps of the global batch 64), a 1-epoch probe, no baselines.
LEAN = ["scale=smoke", "trainer.max_epochs=1", "probe.epochs=1", "baselines=false", "resume=never",
        "trainer.accelerator=cpu"]
DDP2 = ["trainer=ddp", "trainer.devices=2"]


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "PYTHONPATH": WT, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1",
            "LDAE_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline"}


def _train(tmp_path: Path, *args: str, timeout: float = 240):
    # `python -m ldae.train` with this worktree first on the path (the console script may be another checkout's).
    import subprocess

    return subprocess.run([sys.executable, "-m", "ldae.train", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path, env=_env(tmp_path))


def _losses(run_dir: Path) -> list[float]:
    rows = list(csv.DictReader(open(run_dir / "csv" / "pretrain" / "metrics.csv")))
    return [float(r["pretrain/loss"]) for r in rows if r.get("pretrain/loss")]


def _logged(run_dir: Path, key: str) -> float:
    rows = list(csv.DictReader(open(run_dir / "csv" / "pretrain" / "metrics.csv")))
    return next(float(r[key]) for r in rows if r.get(key))


def test_ddp_two_processes_log_the_one_process_loss(tmp_path, compose):
    from ldae.train import run

    run(compose(*LEAN), tmp_path / "one")  # one process, in-process (saves a CLI start)
    two = _train(tmp_path, *LEAN, *DDP2, f"hydra.run.dir={tmp_path}/two")
    assert two.returncode == 0, two.stderr[-3000:]
    l1, l2 = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(l1) == len(l2) == 4
    # Same global batch, same samples, same keyed noise: the all-reduced (global-mean) loss matches.
    assert l2 == pytest.approx(l1, rel=1e-4, abs=1e-6)
    res = json.loads((tmp_path / "two" / "results.json").read_text())
    assert res["world_size"] == 2 and res["device_batch_size"] == 32 and res["effective_batch"] == 64
    assert _logged(tmp_path / "two", "pretrain/world_size") == 2
    assert _logged(tmp_path / "two", "pretrain/device_batch") == 32
    assert _logged(tmp_path / "two", "pretrain/accumulate_grad_batches") == 1
    assert _logged(tmp_path / "two", "pretrain/lr") == pytest.approx(_logged(tmp_path / "one", "pretrain/lr"))
    # One run folder, written by rank 0 (the extra rank logs to rank1.log in the same folder).
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["one", "two"]
    assert len(list(tmp_path.rglob("results.json"))) == 2
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_ddp_multirun_runs_each_job_once(tmp_path):
    r = _train(tmp_path, "-m", *LEAN, *DDP2, "seed=0,1", f"hydra.sweep.dir={tmp_path}/sweep", timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0_ldae", "1_ldae"]
    results = sorted(tmp_path.rglob("results.json"))
    assert [p.parent.name for p in results] == jobs  # each job ran once, into its own folder
    assert sorted(json.loads(p.read_text())["seed"] for p in results) == [0, 1]
    assert all(json.loads(p.read_text())["world_size"] == 2 for p in results)
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()
