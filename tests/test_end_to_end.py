"""End-to-end runs at scale=smoke: in process through the compose API, plus a few real CLI calls."""

import json
import os
import time

import pytest
import torch
from helpers import assert_top1_of, run_cli

REQUIRED = ("experiment", "scale", "seed", "probe_top1", "pretrain_loss", "wall_s")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from ldae.cli import compose_config
    from ldae.train import run

    out = tmp_path_factory.mktemp("run")
    cfg = compose_config(["experiment=ldae", "scale=smoke"])
    return out, run(cfg, out)


def test_smoke_run_writes_the_run_folder(smoke_run):
    out, res = smoke_run
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(res))
    for k in REQUIRED:
        assert k in saved, k
    assert saved["experiment"] == "ldae" and saved["scale"] == "smoke"
    assert_top1_of(saved["probe_top1"], 128)  # of data.num_val=128 shapes
    assert saved["pretrain_loss"] > 0
    assert_top1_of(saved["baseline_pixels_top1"], 128)
    # A random encoder cannot read the classes: chance is 10 (10 classes), the binomial sd on 128 images 2.7
    # points; measured 7.8. 25 is 5.7 sd above chance: only a label leak gets there.
    assert_top1_of(saved["baseline_random_top1"], 128)
    assert saved["baseline_random_top1"] <= 25
    assert saved["latent_dim"] == 2 and saved["latent_dim_paper"] == 32
    assert saved["lr"] == pytest.approx(saved["base_lr"] * saved["effective_batch"] / 256)
    assert (out / "config.yaml").exists()
    assert (out / "csv" / "pretrain" / "metrics.csv").exists()
    assert (out / "checkpoints" / "last.ckpt").exists()


def test_checkpoint_loads_with_weights_only_and_clean_keys(smoke_run):
    out, _ = smoke_run
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    keys = list(ckpt["state_dict"])
    assert not any(k.startswith("module.") or "_orig_mod." in k for k in keys)
    assert any(k.startswith("ema.module.") for k in keys) and any(k.startswith("tokenizer.components") for k in keys)
    assert ckpt["hyper_parameters"]["config"]["name"] == "ldae"


def test_probe_cli_logic_rebuilds_from_checkpoint(smoke_run, tmp_path):
    from ldae.cli import compose_config
    from ldae.evaluation import evaluate_checkpoint

    out, res = smoke_run
    cfg = compose_config([f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", "probe.t=20"], "eval")
    r = evaluate_checkpoint(cfg, tmp_path, ["probe.t"])
    assert_top1_of(r["probe_top1"], 128)
    assert r["pretrain_step"] == res["steps"]
    stored = (tmp_path / "config.yaml").read_text()
    assert "t: 20" in stored
    assert (tmp_path / "results.json").exists()


def test_probe_reproduces_the_runs_probe_top1_exactly(smoke_run, tmp_path):
    """Same seed, features recomputed from the rebuilt checkpoint (disk cache off): the same curve."""
    from ldae.cli import compose_config
    from ldae.evaluation import evaluate_checkpoint

    out, res = smoke_run
    cfg = compose_config([f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", "probe.disk_cache=false"], "eval")
    r = evaluate_checkpoint(cfg, tmp_path, ["probe.disk_cache"])
    assert r["protocol"] == "linear" and r["probe_feature_cache"]["train"]["hit"] is False
    assert r["probe_top1"] == res["probe_top1"] and r["probe_curve"] == res["probe_curve"]
    assert res["probe_train_samples_per_s"] > 0 and r["probe_train_samples_per_s"] > 0


def _cli(*args, timeout=120):
    return run_cli("ldae-train", *args, timeout=timeout)


def test_cli_smoke_run_under_a_minute(tmp_path):
    t0 = time.time()
    p = _cli("experiment=ldae", "scale=smoke", f"hydra.run.dir={tmp_path}")
    wall = time.time() - t0
    assert p.returncode == 0, p.stderr[-2000:]
    assert wall < 60, wall
    res = json.loads((tmp_path / "results.json").read_text())
    assert all(k in res for k in REQUIRED)
    assert (tmp_path / ".hydra" / "config.yaml").exists()


@pytest.mark.parametrize("args, first_line", [
    (["experiment=nope"], "ldae-train: error: unknown experiment 'nope'; allowed: ldae"),
    (["data=nope"], "ldae-train: error: unknown data 'nope'; allowed: cifar10, fashion_mnist, imagefolder, plugin, shapes"),
    (["tokenizer=nope"], "ldae-train: error: unknown tokenizer 'nope'; allowed: conv_vae, none, patch_ae, patch_pca, patch_vae, plugin, vqgan, vqgan_no_perceptual"),
    (["schedule=no_such_schedule"], "ldae-train: error: unknown schedule 'no_such_schedule'; allowed:"),
    (["tokenizer.latent_dim=1000"], "ldae-train: error: tokenizer.latent_dim=1000 is out of range; allowed: 1..768"),
    (["data=imagefolder", "data.root=/nonexistent"], "ldae-train: error: data.root=/nonexistent has no 'train' folder"),
    (["data=fashion_mnist", "data.root=/nonexistent"], "ldae-train: error: data.root=/nonexistent holds no Fashion-MNIST"),
    (["data.batchsize=3"], "ldae-train: error: unknown config key 'data.batchsize'"),
])
def test_cli_bad_input_is_one_clear_line(args, first_line):
    p = _cli(*args, "scale=smoke", timeout=60)
    assert p.returncode == 2
    assert p.stderr.splitlines()[0].startswith(first_line), p.stderr
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout


def test_probe_cli_bad_input():
    p = run_cli("ldae-probe", timeout=60, env=dict(os.environ))
    assert p.returncode == 2 and p.stderr.startswith("ldae-probe: error: missing required value 'ckpt_path'")
    p = run_cli("ldae-probe", "ckpt_path=/nonexistent.ckpt", env=dict(os.environ))
    assert p.returncode == 2 and "ckpt_path=/nonexistent.ckpt does not exist" in p.stderr
    assert "Traceback" not in p.stderr
