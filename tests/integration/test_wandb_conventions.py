"""How runs land in wandb (group, name, tags from ldae/run_identity.py; the fixed summary names), that a
failing wandb never stops a run, and that the sweep presets (table2, trajectory, optuna) compose."""

import logging

import pytest
from helpers import read_offline_run
from omegaconf import OmegaConf

from ldae.run_identity import identity


def fake_hydra(task: list[str], params: dict | None = None):
    """The parts of a Hydra job's HydraConfig that identity() reads."""
    return OmegaConf.create({"sweeper": {"params": params or {}}, "overrides": {"task": task}})


def test_identity_of_a_trajectory_row_a_table2_cell_and_an_adhoc_sweep(compose):
    rows = "trajectory/00_dit_baseline,trajectory/07_patch_pca"
    task = ["experiment=trajectory/07_patch_pca", "scale=smoke", "logger=wandb", "seed=1"]
    cfg = compose("sweep=trajectory", *task)
    ident = identity(cfg, fake_hydra(task, {"experiment": rows}), argv=["-m", "sweep=trajectory", "seed=1"])
    assert (ident["group"], ident["point"]) == ("trajectory", "07_patch_pca")
    assert ident["swept"] == {"experiment": "trajectory/07_patch_pca"}
    assert ident["tags"] == ["experiment=trajectory/07_patch_pca", "scale=smoke"]  # not seed, not logger

    task = ["experiment=trajectory/05_patch_vae", "tokenizer.latent_dim=64"]
    cfg = compose("sweep=table2", *task)
    ident = identity(cfg, fake_hydra(task, {"experiment": "a,b", "tokenizer.latent_dim": "8,64"}), argv=["-m", "sweep=table2"])
    assert (ident["family"], ident["group"], ident["point"]) == ("sweep/table2", "sweep/table2", "patch_vae-d64")
    assert ident["swept"] == {"experiment": "trajectory/05_patch_vae", "tokenizer.latent_dim": "64"}

    task = ["experiment=ldae", "tokenizer.latent_dim=16", "seed=0", "optim.base_lr=0.001"]
    cfg = compose(*task, "logger=wandb", "logger.group=mine")
    ident = identity(cfg, fake_hydra(task), argv=["-m", "experiment=ldae", "tokenizer.latent_dim=16,32", "seed=0,1",
                                                  "optim.base_lr=0.001"])
    assert (ident["family"], ident["group"], ident["point"]) == ("ldae", "mine", "ldae-latent_dim=16")
    assert ident["swept"] == {"tokenizer.latent_dim": "16", "seed": "0"}  # the fixed lr is a tag, not a sweep
    assert "optim.base_lr=0.001" in ident["tags"]
    assert identity(compose("experiment=ldae"))["point"] == "ldae"  # outside Hydra: nothing swept
    # experiments/trajectory.py: its own keys (steps, seeds) are not the row's config: no tags
    task = ["scale=smoke", "steps=[11,12]", "seeds=2", "data.num_train=512"]
    ident = identity(compose("experiment=trajectory/11_image_output", *task[::3]), fake_hydra(task), argv=task)
    assert ident["tags"] == ["scale=smoke", "data.num_train=512"] and ident["point"] == "11_image_output"


def test_the_table2_preset_composes_and_validates_every_cell(compose):
    from ldae.config import validate
    from ldae.paper import TABLE2

    points = set()
    for exp in ("04_noise_schedule", "05_patch_vae", "06_patch_ae", "07_patch_pca"):
        for d in (8, 16, 32, 64, 128):
            cfg = compose("sweep=table2", f"experiment=trajectory/{exp}", f"tokenizer.latent_dim={d}")
            validate(cfg)
            assert cfg.family == "sweep/table2" and cfg.tokenizer.name in TABLE2
            points.add(cfg.point)
    assert len(points) == 20 and "patch_pca-d16" in points and "vqgan-d8" in points


def test_the_optuna_preset_maximises_probe_top1(compose):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import get_class

    from ldae.cli import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = hcompose("train", overrides=["sweep=optuna_lr", "scale=smoke"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    sw = cfg.hydra.sweeper
    assert get_class(sw._target_).__name__ == "OptunaSweeper"
    assert sw.direction == "maximize" and "optim.base_lr" in sw.params and cfg.family == "sweep/optuna_lr"


def test_a_wandb_that_cannot_start_disables_itself(compose, tmp_path, monkeypatch, caplog):
    import wandb

    from ldae.wandb_logger import make_wandb_logger

    def broken(*a, **k):
        raise RuntimeError("no service")

    monkeypatch.setattr(wandb, "init", broken)
    monkeypatch.setattr("ldae.wandb_logger._FAILED", None)
    with caplog.at_level(logging.WARNING, logger="ldae"):
        assert make_wandb_logger(compose("logger=wandb"), tmp_path, "pretrain") is None
    assert "wandb disabled" in caplog.text


def test_a_wandb_failure_is_remembered_for_the_whole_run(compose, tmp_path, monkeypatch, caplog):
    """An unreachable server (init waits, then raises): one wait in all; every later stage of the run, and the next
    run in the same process (a trajectory's rows), logs to CSV only with one line each and no further init."""
    import time

    import wandb

    from ldae.wandb_logger import forget_wandb_failure, make_wandb_logger

    calls = []

    def unreachable(*a, **k):
        calls.append(k.get("job_type"))
        time.sleep(0.5)  # the init timeout, shortened
        raise wandb.errors.CommError("Run initialization has timed out after 0.5 sec.")

    monkeypatch.setattr(wandb, "init", unreachable)
    monkeypatch.setattr("ldae.wandb_logger._FAILED", None)
    cfg = compose("logger=wandb", "logger.mode=online")
    t0 = time.time()
    with caplog.at_level(logging.WARNING, logger="ldae"):
        for stage in ("tokenizer", "pretrain", "probe_encoder", "probe_pixels", "probe_random"):
            assert make_wandb_logger(cfg, tmp_path, stage) is None
        assert make_wandb_logger(cfg, tmp_path / "next_row", "pretrain") is None
    assert calls == ["tokenizer"] and time.time() - t0 < 0.5 + 0.4  # one wait; the others add none
    lines = [r.getMessage() for r in caplog.records if "wandb" in r.getMessage()]
    assert len(lines) == 6 and "timed out" in lines[0] and "do not try again" in lines[0]
    assert all(ln.startswith("wandb skipped for stage ") and "CommError" in ln for ln in lines[1:])
    forget_wandb_failure()
    assert make_wandb_logger(cfg, tmp_path, "pretrain") is None and calls == ["tokenizer", "pretrain"]


def test_a_wandb_that_fails_mid_run_never_stops_training(compose, tmp_path, monkeypatch, caplog):
    """Every log, image and summary call of wandb raises: the run finishes and writes its results."""
    import wandb
    from wandb.sdk.wandb_run import Run

    from ldae.train import run

    def broken(*a, **k):
        raise RuntimeError("wandb is down")

    monkeypatch.setattr(Run, "log", broken)
    monkeypatch.setattr(wandb.sdk.wandb_summary.Summary, "update", broken)
    cfg = compose("experiment=ldae", "logger=wandb", "logger.mode=offline", "baselines=false", "probe.epochs=1",
                  "trainer.max_epochs=1")
    with caplog.at_level(logging.WARNING, logger="ldae"):
        res = run(cfg, tmp_path)
    assert (tmp_path / "results.json").exists() and res["probe_top1"] >= 0
    assert "wandb: log_metrics failed" in caplog.text and "wandb: summary failed" in caplog.text
    assert (tmp_path / "pictures" / "probe_encoder.png").exists()  # the PNGs do not depend on wandb


def test_set_summary_writes_the_fixed_names(compose, tmp_path):
    """The summary holds the given final values (gen/fid too, a number only: "no FID weights" is skipped)."""
    pytest.importorskip("wandb")
    from ldae.wandb_logger import finish, make_wandb_logger, set_summary

    lg = make_wandb_logger(compose("logger=wandb", "logger.mode=offline"), tmp_path, "pretrain")
    assert lg is not None
    lg.log_metrics({"pretrain/loss": 9.0}, step=0)  # a step value: the summary must end at the final one
    set_summary([lg], {"pretrain/loss": 0.5, "tokenizer/psnr": 20.0, "gen/fid": 33.0, "probe/top1": None})
    set_summary([lg], {"gen/fid": "no FID weights"})
    finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    summ = read_offline_run(run_dir)["summary"]
    assert (summ["pretrain/loss"], summ["tokenizer/psnr"], summ["gen/fid"]) == (0.5, 20.0, 33.0)
    assert "probe/top1" not in summ
