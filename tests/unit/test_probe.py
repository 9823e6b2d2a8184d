import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from ldae.lit.features import PixelFeatures
from ldae.lit.probe import LinearProbe


def _blobs(n=512, dim=16, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    return centers[y] + torch.randn(n, dim, generator=g), y


def _fit(probe, train, val, epochs):
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(probe, train, val)
    return probe.history[-1]["top1"]


@pytest.mark.parametrize("optimizer, base_lr", [("adamw", 1e-2), ("sgd", 0.5), ("lars", 400.0)])
def test_probe_learns_separable_features(optimizer, base_lr):
    pl.seed_everything(0, verbose=False)  # head init and batch order: not whatever the tests before left
    x, y = _blobs()
    xv, yv = _blobs(256, seed=0)
    probe = LinearProbe(16, 4, optimizer=optimizer, base_lr=base_lr, batch_size=64, warmup_epochs=1)
    top1 = _fit(probe, DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True),
                DataLoader(TensorDataset(xv, yv), batch_size=256), 5)
    assert top1 > 90


def test_probe_head_is_bn_without_affine_and_owns_only_its_params():
    ext = PixelFeatures(4)
    probe = LinearProbe(ext.dim, 3, extractor=ext)
    bn, lin = probe.head
    assert not bn.affine and bn.eps == 1e-6
    assert float(lin.weight.std()) == pytest.approx(0.01, rel=0.3)
    assert {n for n, p in probe.named_parameters() if p.requires_grad} == {"head.1.weight", "head.1.bias"}


def test_probe_on_the_fly_features_from_images():
    """With an extractor the probe trains from (image, label, index) batches (the augmented path)."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (128,), generator=g)
    x = torch.randn(128, 3, 4, 4, generator=g) * 0.1 + y.view(-1, 1, 1, 1).float()
    ds = TensorDataset(x, y, torch.arange(128))
    probe = LinearProbe(48, 2, optimizer="adamw", base_lr=1e-2, batch_size=32, warmup_epochs=0,
                        extractor=PixelFeatures(4))
    assert _fit(probe, DataLoader(ds, batch_size=32, shuffle=True), DataLoader(ds, batch_size=64), 2) > 95


def test_lr_is_base_lr_times_batch_over_256():
    assert LinearProbe(8, 2, base_lr=0.1, batch_size=16384).lr == pytest.approx(6.4)
