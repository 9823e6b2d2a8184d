"""Before any work, a run checks the folders it will write: the run folder and the cache can be written, and the
run folder has room for one checkpoint. Each failure is one line naming the key and the folder."""

import errno
import os
import tempfile

import pytest
from helpers import ROOT

from ldae.utils.io import FolderError, check_writable


def test_a_folder_under_a_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(FolderError) as e:
        check_writable(tmp_path / "f" / "run", "output_dir")
    assert str(e.value) == (f"output_dir={tmp_path / 'f' / 'run'} cannot be written (Not a directory); allowed: "
                            f"a folder this user can create and write")


def test_a_read_only_folder_is_refused(tmp_path, monkeypatch):
    # Root ignores permission bits, so the denial is injected where the probe file is created.
    real = tempfile.mkstemp

    def denied(*a, **k):
        if str(k.get("prefix", "")).startswith(".ldae-write-test"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real(*a, **k)

    monkeypatch.setattr("ldae.utils.io.tempfile.mkstemp", denied)
    with pytest.raises(FolderError, match=r"^paths.cache_dir=.* cannot be written \(Permission denied\)"):
        check_writable(tmp_path / "cache", "paths.cache_dir")


def test_too_little_room_for_a_checkpoint_is_refused(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 * 2**20, 9 * 2**20, 2**20))
    with pytest.raises(FolderError) as e:
        check_writable(tmp_path, "output_dir", 5 * 2**20, "one checkpoint of model.name=tiny-4-4 (weights, EMA, AdamW)")
    assert e.value.errno == errno.ENOSPC
    assert str(e.value) == (f"output_dir={tmp_path} has 1 MiB free; one checkpoint of model.name=tiny-4-4 (weights, "
                            f"EMA, AdamW) needs about 5 MiB; allowed: a folder with more free space")
    check_writable(tmp_path, "output_dir", 2**19)  # enough: no error
    assert not any(p.name.startswith(".ldae-write-test") for p in tmp_path.iterdir())


def test_checkpoint_estimate_matches_the_real_parameter_count_within_2x():
    """The estimate sizes the free-space check: it must be of the order of the real checkpoint."""
    from ldae.models import build_backbone
    from ldae.models.registry import checkpoint_bytes, lookup
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "model" / "dit.yaml")
    cfg.name = "tiny-4-4"
    net = build_backbone(cfg, input_size=4, patch_size=1, in_channels=12, out_channels=12)
    real = 4 * 4 * sum(p.numel() for p in net.parameters())  # weights, EMA, two Adam moments in fp32
    est = checkpoint_bytes(lookup("tiny-4-4"), cfg.mlp_ratio, cfg.cond_ratio)
    assert real / 2 < est < real * 2, (est, real)


def test_train_refuses_an_unwritable_run_folder_before_any_work(compose, tmp_path, monkeypatch):
    from ldae.train import run

    monkeypatch.setenv("LDAE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "f").write_text("x")
    cfg = compose("experiment=ldae", f"paths.cache_dir={tmp_path / 'cache'}")
    with pytest.raises(FolderError, match=r"^output_dir=.*/f/run cannot be written"):
        run(cfg, tmp_path / "f" / "run")
    cfg = compose("experiment=ldae", f"paths.cache_dir={tmp_path / 'f' / 'cache'}")
    with pytest.raises(FolderError, match=r"^paths.cache_dir=.*/f/cache cannot be written"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing started


def test_probe_refuses_an_unwritable_output_folder_before_reading_the_checkpoint(tmp_path):
    from ldae.cli import compose_config
    from ldae.evaluation import evaluate_checkpoint

    (tmp_path / "f").write_text("x")
    cfg = compose_config([f"ckpt_path={tmp_path / 'no.ckpt'}"], "eval")  # never read: the folder fails first
    with pytest.raises(FolderError, match=r"^output_dir=.*/f/probe cannot be written"):
        evaluate_checkpoint(cfg, tmp_path / "f" / "probe")
