"""ldae-probe protocols on a scale=smoke checkpoint (kNN, fine-tuning, cached features), the timm export,
and the online probe during pretraining. In process."""

import csv
import json

import pytest
import torch
from helpers import assert_top1_of


@pytest.fixture(scope="module")
def smoke_ckpt(smoke_run):
    """The shared smoke run's checkpoint and results (tests/integration/conftest.py). That run probes its
    baselines too; they come after the encoder's probe and touch neither the checkpoint nor its features."""
    out, res = smoke_run
    return out / "checkpoints" / "last.ckpt", res


def _evaluate(ckpt, out, *overrides):
    from ldae.cli import compose_config
    from ldae.evaluation import evaluate_checkpoint
    from ldae.probe import probe_keys

    cfg = compose_config([f"ckpt_path={ckpt}", *overrides], "eval")
    return evaluate_checkpoint(cfg, out, probe_keys(list(overrides)))


def test_cached_feature_probe_hits_the_disk_cache_and_reports_samples_per_s(smoke_ckpt, tmp_path):
    ckpt, res = smoke_ckpt
    r = _evaluate(ckpt, tmp_path)  # the training run wrote these features: the probe reads them
    cache = r["probe_feature_cache"]
    assert cache["train"]["hit"] and cache["val"]["hit"] and "/features/" in cache["train"]["path"]
    assert r["probe_top1"] == res["probe_top1"] and r["probe_train_samples_per_s"] > 100
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["probe_train_samples_per_s"] == r["probe_train_samples_per_s"]
    r20 = _evaluate(ckpt, tmp_path / "t20", "probe.t=20")  # another t: other features, another file
    assert r20["probe_feature_cache"]["train"]["path"] != cache["train"]["path"]


def test_knn_protocol_at_smoke(smoke_ckpt, tmp_path):
    ckpt, _ = smoke_ckpt
    r = _evaluate(ckpt, tmp_path, "probe=knn")
    assert r["protocol"] == "knn" and r["knn_k"] == 20
    assert_top1_of(r["knn_top1"], 128)  # of data.num_val=128 shapes
    assert json.loads((tmp_path / "results.json").read_text())["knn_top1"] == r["knn_top1"]


def test_finetune_protocol_at_smoke(smoke_ckpt, tmp_path):
    ckpt, _ = smoke_ckpt
    r = _evaluate(ckpt, tmp_path, "probe=finetune", "probe.epochs=2", "probe.batch_size=64",
                  "probe.num_train=128", "probe.num_val=64")
    assert r["protocol"] == "finetune" and "finetune_ema_top1" in r
    assert_top1_of(r["finetune_top1"], 64)  # of probe.num_val=64
    assert_top1_of(r["finetune_ema_top1"], 64)
    assert r["finetune_lr"] == pytest.approx(1e-3 * 64 / 256)
    rows = list(csv.DictReader(open(tmp_path / "csv" / "finetune" / "metrics.csv")))
    assert any(row.get("finetune/top1") for row in rows) and any(row.get("finetune/loss") for row in rows)


def test_export_gives_the_encoders_features(smoke_ckpt, tmp_path):
    from ldae.checkpoints import load_checkpoint_config
    from ldae.export import cli
    from ldae.lit.features import EncoderFeatures
    from ldae.lit.pretrain import PretrainModule
    from ldae.models.timm_vit import build_vit

    ckpt, _ = smoke_ckpt
    cli([f"ckpt_path={ckpt}", "t=10", f"out={tmp_path / 'enc.pth'}", "input=network"])  # the .pth option, network input
    rec = json.loads((tmp_path / "enc.pth.json").read_text())
    vit = build_vit(rec["timm_kwargs"]).eval()
    vit.load_state_dict(torch.load(tmp_path / "enc.pth", weights_only=True), strict=True)
    state, config = load_checkpoint_config(str(ckpt))
    module = PretrainModule(config)
    module.load_state_dict(state["state_dict"])
    ext = EncoderFeatures(module.encoder(True), module.tokenizer, module.objective, module.schedule, t=10)
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(vit(ext.network_input(x, None)), ext(x), atol=1e-5, rtol=1e-5)


def test_online_probe_logs_and_leaves_pretraining_unchanged(tmp_path):
    # Its own two pretrainings, not the shared run: it compares the online probe switched on and off.
    from ldae.cli import compose_config
    from ldae.stages import pretrain

    weights, out = {}, {}
    for on in (False, True):
        cfg = compose_config(["experiment=ldae", "scale=smoke", f"online_probe.enabled={str(on).lower()}"])
        out[on] = tmp_path / str(on)
        out[on].mkdir()
        module, _, _ = pretrain(cfg, out[on])
        weights[on] = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    assert weights[True].keys() == weights[False].keys()
    for k in weights[True]:
        assert torch.equal(weights[True][k], weights[False][k]), k
    rows = list(csv.DictReader(open(out[True] / "csv" / "pretrain" / "metrics.csv")))
    top1 = [float(r["online_probe/top1"]) for r in rows if r.get("online_probe/top1")]
    assert len(top1) == 2  # one per validation (2 epochs)
    for v in top1:
        assert_top1_of(v, 128)  # of data.num_val=128 shapes
    assert any(r.get("online_probe/loss") for r in rows)
    ck = torch.load(out[True] / "checkpoints" / "last.ckpt", weights_only=True)
    assert any("OnlineProbe" in k for k in ck["callbacks"])  # its head and optimizer resume with the run
