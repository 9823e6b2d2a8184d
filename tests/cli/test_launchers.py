"""Launchers: SLURM through hydra-submitit (config; a real 2-job sweep through its local executor), torchrun."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import LEAN, subprocess_env


def test_slurm_launcher_config_composes():
    from hydra import compose, initialize_config_dir

    from ldae.cli import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "scale=smoke", "trainer=ddp",
                                          "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4",
                                          "hydra.launcher.partition=gpu"], return_hydra_config=True)
    lc = cfg.hydra.launcher
    assert lc._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (lc.nodes, lc.gpus_per_node, lc.tasks_per_node, lc.partition) == (2, 4, 4, "gpu")
    assert lc.signal_delay_s == 90 and lc.max_num_timeout > 0 and lc.timeout_min > 0
    assert cfg.trainer.strategy == "ddp"


def test_run_stamp_is_torchruns_run_id(monkeypatch):
    from ldae.distributed import run_stamp

    monkeypatch.delenv("LDAE_RUN_STAMP", raising=False)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc123")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run_stamp("%Y") == "torchrun-abc123"  # the same on every rank: one folder per job
    monkeypatch.setenv("LDAE_RUN_STAMP", "exp7")
    assert run_stamp("%Y") == "exp7"
    monkeypatch.delenv("LDAE_RUN_STAMP")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    assert run_stamp("%Y").isdigit()  # the clock otherwise


@pytest.mark.slow
def test_submitit_local_multirun_runs_two_jobs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ldae.train", "-m", "hydra/launcher=submitit_local", *LEAN, "seed=0,1",
                        f"hydra.sweep.dir={tmp_path}/sweep", "hydra.launcher.timeout_min=10"],
                       capture_output=True, text=True, timeout=400, cwd=tmp_path, env=subprocess_env(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    results = sorted((tmp_path / "sweep").glob("*/results.json"))
    assert [p.parent.name for p in results] == ["0_ldae", "1_ldae"]
    assert [json.loads(p.read_text())["seed"] for p in results] == [0, 1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
def test_torchrun_two_ranks_write_one_run_folder(tmp_path):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    r = subprocess.run([torchrun, "--standalone", "--nproc-per-node=2", "-m", "ldae.train", *LEAN, "trainer=ddp",
                        "trainer.devices=2"], capture_output=True, text=True, timeout=400, cwd=tmp_path,
                       env=subprocess_env(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "ldae" / "smoke").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("torchrun-")
    res = json.loads((runs[0] / "results.json").read_text())
    assert res["world_size"] == 2 and res["device_batch_size"] == 32


def test_launched_world_size_counts_processes_that_exist(monkeypatch):
    """The latent cache shards over the processes that exist before `fit` (torchrun/SLURM: all of them;
    Lightning's launcher: rank 0 alone, the others start inside `fit`)."""
    from ldae.distributed import launched_world_size

    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(k, raising=False)
    assert launched_world_size() == 1
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert launched_world_size() == 8
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "1")
    assert launched_world_size() == 4
