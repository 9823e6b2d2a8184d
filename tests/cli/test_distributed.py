"""DDP on 2 CPU processes (gloo): the same loss as one process, one run folder per job, `-m` runs each job once."""

import csv
import json
import sys
from pathlib import Path

import pytest
from helpers import LEAN, subprocess_env

DDP2 = ["trainer=ddp", "trainer.devices=2"]


def _train(tmp_path: Path, *args: str, timeout: float = 240):
    # `python -m ldae.train` with this worktree first on the path (the console script may be another checkout's).
    import subprocess

    return subprocess.run([sys.executable, "-m", "ldae.train", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path, env=subprocess_env(tmp_path))


def _losses(run_dir: Path) -> list[float]:
    rows = list(csv.DictReader(open(run_dir / "csv" / "pretrain" / "metrics.csv")))
    return [float(r["pretrain/loss"]) for r in rows if r.get("pretrain/loss")]


def _logged(run_dir: Path, key: str) -> float:
    rows = list(csv.DictReader(open(run_dir / "csv" / "pretrain" / "metrics.csv")))
    return next(float(r[key]) for r in rows if r.get(key))


@pytest.mark.slow
def test_ddp_multirun_matches_one_process_and_runs_each_job_once(tmp_path, compose):
    """`-m` with trainer=ddp on 2 gloo processes: each job runs once, into one folder, and job 0 logs the
    loss of one process with the same global batch (the logged loss is the all-reduced global mean)."""
    from ldae.train import run

    run(compose(*LEAN), tmp_path / "one")  # one process, in-process (saves a CLI start)
    r = _train(tmp_path, "-m", *LEAN, *DDP2, "seed=0,1", f"hydra.sweep.dir={tmp_path}/sweep", timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0_ldae", "1_ldae"]
    results = sorted((tmp_path / "sweep").rglob("results.json"))
    assert [p.parent.name for p in results] == jobs  # each job ran once, into its own folder
    assert sorted(json.loads(p.read_text())["seed"] for p in results) == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["one", "sweep"]  # no stray folders

    two = tmp_path / "sweep" / "0_ldae"
    l1, l2 = _losses(tmp_path / "one"), _losses(two)
    assert len(l1) == len(l2) == 4
    # Same global batch, same samples, same keyed noise: the all-reduced (global-mean) loss matches.
    assert l2 == pytest.approx(l1, rel=1e-4, abs=1e-6)
    res = json.loads((two / "results.json").read_text())
    assert res["world_size"] == 2 and res["device_batch_size"] == 32 and res["effective_batch"] == 64
    assert _logged(two, "pretrain/world_size") == 2
    assert _logged(two, "pretrain/device_batch") == 32
    assert _logged(two, "pretrain/accumulate_grad_batches") == 1
    assert _logged(two, "pretrain/lr") == pytest.approx(_logged(tmp_path / "one", "pretrain/lr"))
    assert (two / "rank1.log").exists()  # the extra rank ran this job, in this folder


def test_vae_posterior_sample_is_keyed_per_sample(compose):
    """A VAE tokenizer's posterior sample while pretraining depends on (seed, epoch, index), not on the batch
    split or the global RNG: 2 ranks with half batches see what 1 process sees."""
    import torch

    from ldae.lit.pretrain import PretrainModule

    cfg = compose("tokenizer=patch_vae", "target.predict=eps", "target.input=latent")
    module = PretrainModule(__import__("omegaconf").OmegaConf.to_container(cfg, resolve=True))
    module.train()
    assert module.tokenizer.variational and module.tokenizer.posterior_mode == "sample"
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    index = torch.arange(100, 108)
    torch.manual_seed(1)
    whole = module.corrupt(x, index, epoch=3)
    torch.manual_seed(2)
    halves = [module.corrupt(x[s], index[s], epoch=3) for s in (slice(0, 4), slice(4, 8))]
    for a, b0, b1 in zip(whole, *halves):
        assert torch.equal(a, torch.cat([b0, b1]))
    z_other_epoch = module.corrupt(x, index, epoch=4)[0]
    assert not torch.allclose(whole[0], z_other_epoch)  # a fresh posterior sample each epoch
