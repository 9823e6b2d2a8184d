"""probe_data: pretrain on one dataset, probe on another (converted to the pretraining input)."""

import json
from pathlib import Path

import pytest
from helpers import assert_top1_of, grey_folder

FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_probe_data_is_read_at_the_pretraining_input(compose, tmp_path):
    from ldae.evaluation import probe_datasets

    cfg = compose("probe_data=imagefolder", f"probe_data.root={grey_folder(tmp_path / 'imgs')}",
                  "probe_data.num_classes=2")
    train, val = probe_datasets(cfg, None)
    x, y, _ = train[0]
    assert x.shape == (3, 16, 16) and -1 <= float(x.min()) and float(x.max()) <= 1  # 24 px grey -> 16 px RGB
    assert len(train) == 48 and len(val) == 48 and {int(val[i][1]) for i in range(len(val))} == {0, 1}
    assert cfg.data.name == "shapes" and cfg.data.image_size == 16  # the pretraining data is untouched


def test_unlabelled_pretraining_needs_a_probe_set(compose, tmp_path):
    from ldae.config import ConfigError, validate

    root = grey_folder(tmp_path / "imgs")
    unlabelled = ["data=imagefolder", f"data.root={root}", "data.labels=false"]
    with pytest.raises(ConfigError, match=r"data.labels=false: .* probe_data=NAME"):
        validate(compose(*unlabelled))
    validate(compose(*unlabelled, "probe_data=shapes"))
    with pytest.raises(ConfigError, match=r"probe_data.root=/nope has no 'train' folder"):
        validate(compose(*unlabelled, "probe_data=imagefolder", "probe_data.root=/nope"))
    with pytest.raises(ConfigError, match=r"unknown probe_data 'nope'"):
        from ldae.cli import check_group_overrides

        check_group_overrides(["probe_data=nope"])


def test_pretrain_on_shapes_probe_on_another_set(tmp_path, monkeypatch):
    from ldae.cli import compose_config
    from ldae.config import validate
    from ldae.evaluation import evaluate_checkpoint
    from ldae.train import run

    monkeypatch.setenv("LDAE_CACHE", str(tmp_path / "cache"))
    root = grey_folder(tmp_path / "imgs")
    cfg = compose_config(["experiment=ldae", "scale=smoke", "baselines=false", "probe_data=imagefolder",
                          f"probe_data.root={root}", "probe_data.num_classes=2"])
    validate(cfg)
    res = run(cfg, tmp_path / "run")
    # Two classes of plain brightness: the probe separates them (chance is 50%).
    assert res["probe_top1"] >= 75 and res["probe_feature_cache"]["val"]["hit"] is False
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    # ldae-probe: the run's own probe set is the stored one (its features are cached: a hit) ...
    again = evaluate_checkpoint(compose_config([f"ckpt_path={ckpt}"], "eval"), tmp_path / "p1")
    assert again["probe_feature_cache"]["val"]["hit"] is True and again["probe_top1"] == res["probe_top1"]
    if not FASHION.is_dir():
        pytest.skip("no /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist)")
    # ... and probe_data=fashion_mnist is another set: another cache key, ten classes at 16 px.
    ecfg = compose_config([f"ckpt_path={ckpt}", "probe_data=fashion_mnist", "probe_data.num_train=256",
                           "probe_data.num_val=128"], "eval")
    r = evaluate_checkpoint(ecfg, tmp_path / "p2")
    assert r["probe_feature_cache"]["val"]["hit"] is False
    assert_top1_of(r["probe_top1"], 128)  # of probe_data.num_val=128
    stored = json.loads(json.dumps(r))
    assert stored["probe_top1"] > 10  # above chance on Fashion-MNIST's ten classes
