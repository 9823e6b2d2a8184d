"""A 2-point Hydra multirun with wandb offline: the offline runs, read back with wandb's own reader of the
.wandb transaction log (`wandb leet inspect --json`), hold the group, the name, the stage, the flat config and
the fixed summary names; the report (ldae/report/runs.py) turns the sweep folder into a table and a plot."""

import json
import os
import sys
from pathlib import Path

import pytest
from helpers import ROOT, read_offline_run, run_cli


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """`ldae-train -m experiment=ldae tokenizer.latent_dim=16,32 logger=wandb` (offline) into a temp folder."""
    pytest.importorskip("wandb")
    if not Path(sys.executable).with_name("wandb").exists():
        pytest.skip("no wandb executable beside the interpreter")
    root = tmp_path_factory.mktemp("sweep")
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "1",
           "LDAE_CACHE": str(root / "cache")}
    env.pop("WANDB_API_KEY", None)
    proc = run_cli("ldae-train", "-m", "experiment=ldae", "scale=smoke", "logger=wandb", "baselines=false",
                   "pictures.every_n_steps=4", "tokenizer.latent_dim=16,32", f"hydra.sweep.dir={root / 'multirun'}",
                   timeout=300, cwd=root, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "multirun"


def test_offline_runs_hold_group_name_config_and_summary(sweep):
    jobs = sorted(p.parent for p in sweep.glob("*/results.json"))
    assert len(jobs) == 2
    results = {j: json.loads((j / "results.json").read_text()) for j in jobs}
    assert [r["point"] for r in results.values()] == ["ldae-latent_dim=16", "ldae-latent_dim=32"]
    run_dirs = [d for j in jobs for d in (j / "wandb").glob("offline-run-*")]
    assert len(run_dirs) == 6  # tokenizer, pretrain, probe_encoder per job
    runs = [read_offline_run(d) for d in run_dirs]
    for job, res in results.items():
        mine = {r["job_type"]: r for r in runs if r["config"].get("run.dir") == str(job.resolve())}
        assert set(mine) == {"tokenizer", "pretrain", "probe_encoder"}
        d = res["swept"]["tokenizer.latent_dim"]
        for r in mine.values():
            assert r["group"] == "ldae" and r["name"] == res["point"]
            assert r["config"]["tokenizer.latent_dim"] == int(d) and r["config"]["name"] == "ldae"  # flat config
            assert r["config"]["run.swept.tokenizer.latent_dim"] == d
            assert f"tokenizer.latent_dim={d}" in r["tags"] and "scale=smoke" in r["tags"]
        # The fixed summary names hold the stage's final values (those of results.json).
        assert mine["probe_encoder"]["summary"]["probe/top1"] == pytest.approx(res["probe_top1"])
        assert mine["pretrain"]["summary"]["pretrain/loss"] == pytest.approx(res["pretrain_loss"])
        assert mine["pretrain"]["summary"]["tokenizer/psnr"] == pytest.approx(res["tokenizer_psnr"])
        assert mine["tokenizer"]["summary"]["tokenizer/psnr"] == pytest.approx(res["tokenizer_psnr"])
        # Pictures: PNGs in the run folder, the same images in wandb.
        pics = {p.name for p in (job / "pictures").iterdir()}
        assert {"pca_bases.png", "latent_noise.png", "probe_encoder.png", "denoise_step000004.png",
                "denoise_step000008.png"} <= pics
        assert "pictures/pca_bases.filenames" in mine["tokenizer"]["summary"]
        assert "tokenizer/recon.filenames" in mine["tokenizer"]["summary"]
        assert "pictures/denoise.filenames" in mine["pretrain"]["summary"]
        assert "pictures/probe_curve.filenames" in mine["probe_encoder"]["summary"]


def test_report_on_the_sweep_folder_writes_table_and_plot(sweep, tmp_path):
    from ldae.report.runs import compare

    paths = compare([str(sweep)], out=tmp_path)
    md = paths["md"].read_text()
    assert "| ldae | ldae-latent_dim=16 | 1 |" in md and "| ldae | ldae-latent_dim=32 | 1 |" in md
    assert "tokenizer.latent_dim" in md.splitlines()[4]  # the swept key is a column
    rows = paths["csv"].read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("group,point,experiment,n,seeds,probe_top1")
    from PIL import Image

    with Image.open(paths["png"]) as im:
        assert im.size[0] > 600 and im.size[1] > 300
    # Without --out the report lands next to its input.
    compare([str(sweep)], tags=["tokenizer.latent_dim=32"])
    assert "latent_dim=16" not in (sweep / "report.md").read_text()
