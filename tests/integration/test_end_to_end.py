"""End-to-end runs at scale=smoke, in process through the compose API, on the shared smoke run
(tests/integration/conftest.py); the real CLI calls are tests/cli/test_cli.py."""

import json

import pytest
import torch
from helpers import RESULT_KEYS, assert_top1_of


def test_smoke_run_writes_the_run_folder(smoke_run):
    out, res = smoke_run
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(res))
    for k in RESULT_KEYS:
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


def test_results_table_sets_the_probe_beside_its_baselines_and_chance(smoke_run):
    out, res = smoke_run
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:]
            for line in (out / "results.md").read_text().splitlines() if line.startswith("| ") and "---" not in line}
    for name, key in (("ldae (pretrained encoder)", "probe_top1"), ("raw pixels (baseline)", "baseline_pixels_top1"),
                      ("random encoder, same architecture (baseline)", "baseline_random_top1")):
        top1, minus_chance = rows[name]
        assert float(top1) == pytest.approx(res[key], abs=0.005)
        assert float(minus_chance.rstrip(" |")) == pytest.approx(res[key] - 10.0, abs=0.01)  # 10 classes
    assert float(rows["chance (100 / 10 classes)"][0]) == 10.0


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
