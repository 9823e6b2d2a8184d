"""Evaluation protocols (issue 7): linear probe vs logistic regression, LARS, logged lr, kNN, fine-tuning
parts, feature cache, online probe, export. Fast: in-process, tiny tensors or scale=smoke."""

import csv
import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from ldae.lit.probe import LinearProbe


def _gaussians(n, dim=32, classes=10, seed=0, spread=0.45):
    """Overlapping class clusters: a linear classifier reaches ~80-90%, not 100%."""
    g = torch.Generator().manual_seed(123)
    centers = torch.randn(classes, dim, generator=g) * spread
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    return centers[y] + torch.randn(n, dim, generator=g) + 3.0, y  # offset: the BN has work to do


def test_linear_probe_within_one_point_of_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    x, y = _gaussians(4000, seed=0)
    xv, yv = _gaussians(2000, seed=1)
    ref = LogisticRegression(max_iter=2000, C=1.0).fit(x.numpy(), y.numpy())
    ref_top1 = 100.0 * (ref.predict(xv.numpy()) == yv.numpy()).mean()
    pl.seed_everything(0, verbose=False)
    probe = LinearProbe(32, 10, optimizer="adamw", base_lr=1e-2, batch_size=256, warmup_epochs=1)
    trainer = pl.Trainer(max_epochs=30, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(probe, DataLoader(TensorDataset(x, y), batch_size=256, shuffle=True),
                DataLoader(TensorDataset(xv, yv), batch_size=1000))
    top1 = probe.history[-1]["top1"]
    assert 60 < ref_top1 < 95  # a problem where the two can disagree
    assert abs(top1 - ref_top1) <= 1.0, (top1, ref_top1)


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_lars_step_matches_hand_computation(wd):
    """MAE's LARS: 2-D weights get decay and the trust ratio (also at wd 0); 1-D parameters get neither."""
    torch.manual_seed(0)
    probe = LinearProbe(6, 3, optimizer="lars", base_lr=0.1, batch_size=512, momentum=0.9, weight_decay=wd)
    lin = probe.head[1]
    nn_b = torch.randn(3)
    with torch.no_grad():
        lin.bias.copy_(nn_b)
    w0, b0 = lin.weight.detach().clone(), lin.bias.detach().clone()
    gw, gb = torch.randn_like(w0), torch.randn_like(b0)
    lin.weight.grad, lin.bias.grad = gw.clone(), gb.clone()
    opt = probe.build_optimizer()
    opt.step()
    lr = 0.1 * 512 / 256
    d = gw + wd * w0
    trust = 0.001 * w0.norm() / (gw.norm() + wd * w0.norm() + 1e-8)  # timm's form of ||w|| / ||g + wd w||
    if wd == 0:
        assert math.isclose(float(trust), float(0.001 * w0.norm() / d.norm()), rel_tol=1e-5)
    torch.testing.assert_close(lin.weight.detach(), w0 - lr * trust * d)
    torch.testing.assert_close(lin.bias.detach(), b0 - lr * gb)  # plain SGD: no decay, no trust ratio


def test_probe_lr_presets_and_sources(compose):
    from ldae.plan import probe_base_lr

    pr = compose("scale=paper").probe
    assert pr.lr_source == "mae" and probe_base_lr(pr) * 16384 / 256 == pytest.approx(6.4)
    pr = compose("scale=paper", "probe.lr_source=paper_printed").probe
    assert probe_base_lr(pr) * 16384 / 256 == pytest.approx(6.4e-3)
    pr = compose("probe.base_lr=0.5").probe  # smoke: lr_source=custom reads probe.base_lr
    assert probe_base_lr(pr) == 0.5


def test_logged_lr_is_base_lr_times_effective_batch(compose, tmp_path):
    """MAE's recipe (LARS, base lr 0.1) on on-the-fly features with accumulation: effective batch 64 = 4 x 16."""
    from ldae.lit.features import PixelFeatures
    from ldae.evaluation import linear_probe, probe_datasets

    cfg = compose("probe.cache_features=false", "probe.optimizer=lars", "probe.lr_source=mae",
                  "probe.batch_size=64", "probe.feature_batch_size=16",
                  "probe.epochs=2", "probe.warmup_epochs=1", "probe.num_train=128", "probe.num_val=32")
    train, val = probe_datasets(cfg, None)
    ext = PixelFeatures(cfg.data.image_size)
    res = linear_probe(cfg, ext, ext.dim, train, val, tmp_path, "pixels")
    assert res["batch_size"] == 64
    rows = list(csv.DictReader(open(tmp_path / "csv" / "probe_pixels" / "metrics.csv")))
    peak = [float(r["probe/peak_lr"]) for r in rows if r.get("probe/peak_lr")]
    step_lrs = [float(r["probe/lr"]) for r in rows if r.get("probe/lr")]
    expected = 0.1 * 64 / 256
    assert peak == [pytest.approx(expected)]
    assert max(step_lrs) == pytest.approx(expected)  # the end of the warm-up reaches it
    assert step_lrs[-1] < expected  # then the cosine decays, per iteration
    assert float(next(r["probe/effective_batch"] for r in rows if r.get("probe/effective_batch"))) == 64


def test_pool_cls_and_unknown_protocols_fail_clearly(compose):
    from ldae.choices import check_pool
    from ldae.config import ConfigError, validate

    with pytest.raises(ConfigError, match="probe.pool=cls needs a class token, and the DiT encoder has none"):
        validate(compose("probe.pool=cls"))
    with pytest.raises(ValueError, match="DiT encoder has none"):
        check_pool("cls")
    with pytest.raises(ConfigError, match="unknown probe.lr_source 'x'; allowed: mae, paper_printed, custom"):
        validate(compose("probe.lr_source=x"))


def test_ldae_train_refuses_other_protocols(compose, tmp_path):
    from ldae.config import ConfigError
    from ldae.train import run

    with pytest.raises(ConfigError, match="ldae-probe ckpt_path=RUN/checkpoints/last.ckpt probe=knn"):
        run(compose("probe=knn"), tmp_path)


def test_knn_matches_brute_force():
    from ldae.lit.knn import knn_predict, knn_top1

    g = torch.Generator().manual_seed(0)
    tr, ytr = torch.randn(50, 8, generator=g), torch.randint(0, 4, (50,), generator=g)
    q = torch.randn(7, 8, generator=g)
    pred = knn_predict(tr, ytr, q, 4, k=5, temperature=0.1, chunk=3)
    trn, qn = tr / tr.norm(dim=1, keepdim=True), q / q.norm(dim=1, keepdim=True)
    for i in range(7):
        sims = trn @ qn[i]
        top = sims.argsort(descending=True)[:5]
        votes = torch.zeros(4).index_add_(0, ytr[top], (sims[top] / 0.1).exp())
        assert pred[i] == votes.argmax()
    assert knn_top1(tr, ytr, tr, ytr, 4, k=1) == 100.0  # each point is its own nearest neighbour


def test_feature_cache_key_follows_the_weights_and_settings(tmp_path):
    from ldae.lit.features import PixelFeatures, cached_features, feature_key, weights_digest

    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    assert weights_digest(a) != weights_digest(b)
    b.load_state_dict(a.state_dict())
    assert weights_digest(a) == weights_digest(b)
    k = feature_key({"w": weights_digest(a), "t": 10}, {"data": 1}, "train", 8)
    assert k != feature_key({"w": weights_digest(a), "t": 20}, {"data": 1}, "train", 8)
    assert k != feature_key({"w": weights_digest(a), "t": 10}, {"data": 1}, "val", 8)
    ds = TensorDataset(torch.randn(8, 3, 2, 2), torch.arange(8), torch.arange(8))
    f1, y1, i1 = cached_features(PixelFeatures(2), DataLoader(ds, batch_size=4), k, tmp_path)
    f2, y2, i2 = cached_features(PixelFeatures(2), DataLoader(ds, batch_size=4), k, tmp_path)
    assert not i1["hit"] and i2["hit"] and torch.equal(f1, f2) and torch.equal(y1, y2)
    assert [p.name for p in tmp_path.iterdir()] == [f"{k}.pt"]  # no temporary file left


def test_finetune_optimizer_has_layer_decay_and_no_decay_on_1d():
    from omegaconf import OmegaConf

    from ldae.models.timm_vit import build_vit
    from ldae.lit.finetune import FineTuneModule

    pr = OmegaConf.load("conf/probe/finetune.yaml")
    vit = build_vit({"img_size": 8, "patch_size": 4, "in_chans": 3, "num_classes": 5, "global_pool": "avg",
                     "embed_dim": 16, "depth": 3, "num_heads": 2, "class_token": False, "final_norm": False,
                     "fc_norm": False}, drop_path_rate=0.1)
    ft = FineTuneModule(vit, lambda x: x, 5, pr, effective_batch=1024)
    assert ft.lr == pytest.approx(4e-3)  # App. B: base 1e-3 x 1024 / 256
    groups = ft.build_optimizer().param_groups
    lrs = sorted({round(g["lr"], 12) for g in groups})
    assert lrs[-1] == pytest.approx(4e-3) and lrs[0] == pytest.approx(4e-3 * 0.65 ** 4)  # embed: depth + 1 layers down
    for g in groups:
        if any(p.ndim <= 1 for p in g["params"]):
            assert g["weight_decay"] == 0.0
    assert type(vit.blocks[-1].drop_path1).__name__ == "DropPath" and ft.mixup is not None


def test_export_folds_adaln_at_t_random_conditional_model():
    """Non-zero adaLN (not the identity at init), class-conditional (null class), a block before the split."""
    from ldae.models.timm_vit import build_vit, fold_encoder
    from ldae.models.dit import DiT

    torch.manual_seed(0)
    m = DiT(16, 4, 3, hidden_size=32, depth=4, num_heads=2, adaln_zero=False, num_classes=10).eval()
    for block in (None, 1):
        sd, kw = fold_encoder(m, 37, block)
        vit = build_vit(kw).eval()
        vit.load_state_dict(sd, strict=True)
        x = torch.randn(4, 3, 16, 16)
        ours = m.forward_features(x, torch.full((4,), 37), None, block)
        torch.testing.assert_close(vit(x), ours, atol=1e-5, rtol=1e-5)


def test_probe_block_range_and_old_checkpoint_configs(compose):
    from omegaconf import OmegaConf

    from ldae.checkpoints import upgrade_stored_config
    from ldae.config import ConfigError, validate

    validate(compose("probe.block=2"))  # micro-1-1: 2 blocks
    with pytest.raises(ConfigError, match=r"probe.block=3 is out of range; allowed: null \(the split point\) or 1..2"):
        validate(compose("probe.block=3"))
    stored = OmegaConf.to_container(compose(), resolve=True)
    for key in ("pool", "lr_source", "lr_presets", "disk_cache", "crop_min_scale"):
        del stored["probe"][key]
    del stored["online_probe"]
    up = OmegaConf.create(upgrade_stored_config(stored))
    OmegaConf.set_struct(up, True)
    validate(up)
    assert up.probe.lr_source == "custom" and up.probe.base_lr == 1e-3  # the old meaning: base_lr as given


def test_the_command_lines_probe_keys_go_over_the_stored_recipe(compose):
    """ldae-probe's one merge: single probe.KEYs over the checkpoint's recipe, a probe=NAME recipe whole,
    probe_data and the logger from the command line."""
    from omegaconf import OmegaConf

    from ldae.checkpoints import upgrade_stored_config
    from ldae.config import validate
    from ldae.evaluation import probe_config
    from ldae.probe import probe_keys

    # as a checkpoint's reader hands it over (load_checkpoint_config): stored, then upgraded
    stored = upgrade_stored_config(OmegaConf.to_container(compose("probe.epochs=3", "probe.t=30"), resolve=True))

    def run_cfg(*args):
        cli = compose("ckpt_path=x.ckpt", *args, config_name="eval")
        return probe_config(stored, cli, probe_keys(list(args)))

    assert probe_keys(["probe=knn", "probe.k=5", "+probe.t=3", "baselines=true"]) == ["probe", "probe.k", "probe.t"]
    r = run_cfg()
    assert r.probe == stored["probe"] and r.probe_data is None and OmegaConf.is_struct(r)
    r = run_cfg("probe.t=20", "logger=wandb")
    assert (r.probe.name, r.probe.t, r.probe.epochs, r.logger.wandb) == ("linear", 20, 3, True)
    r = run_cfg("probe=knn", "probe.k=5", "probe_data=shapes")
    assert (r.probe.name, r.probe.t, r.probe.k, r.probe_data.name) == ("knn", 10, 5, "shapes")  # not the stored t=30
    assert "epochs" not in r.probe
    validate(r)


def test_augmented_probe_trains_on_random_resized_crops_and_validates_on_the_center_crop(compose):
    from torchvision.transforms import v2

    from ldae.evaluation import probe_datasets

    train, val = probe_datasets(compose("probe.augment=true", "probe.cache_features=false"), None)
    ops = {type(op): op for op in train.transform.transforms}
    assert ops[v2.RandomResizedCrop].scale == (0.08, 1.0) and v2.RandomHorizontalFlip in ops
    assert val.transform is None  # the clean center crop
