"""A resumed run continues its wandb run: the id lives in the run folder (offline here, never a prompt)."""

import pytest


def test_a_resumed_stage_reuses_its_wandb_run_id(compose, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from ldae.wandb_logger import make_wandb_logger

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose("logger=wandb", "logger.mode=offline")
    first = make_wandb_logger(cfg, tmp_path, "pretrain")
    assert first is not None
    run_id = first.experiment.id
    assert (tmp_path / "wandb" / "pretrain.id").read_text().strip() == run_id
    wandb.finish()
    again = make_wandb_logger(cfg, tmp_path, "pretrain")  # the same command run again, same folder
    assert again is not None and again.experiment.id == run_id
    other = make_wandb_logger(cfg, tmp_path, "probe_encoder")  # another stage: its own run
    assert other is not None and other.experiment.id != run_id
    wandb.finish()
