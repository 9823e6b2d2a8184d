import os

import pytest
import torch
from omegaconf import OmegaConf

from ldae.data import build_dataset
from ldae.plan import split_batch

FASHION = "/usr/share/datasets/fashion-mnist"


def _cfg(**kw):
    base = {"name": "shapes", "root": None, "image_size": 16, "num_classes": 10, "num_train": 64, "num_val": 32,
            "seed": 0, "difficulty": 1.0, "crop": "center", "crop_min_scale": 0.2, "hflip": False, "download": False}
    base.update(kw)
    return OmegaConf.create(base)


def test_shapes_items_are_images_labels_and_indices():
    ds = build_dataset(_cfg(), "train")
    x, y, i = ds[5]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and -1 <= float(x.min()) <= float(x.max()) <= 1
    assert 0 <= int(y) < 10 and i == 5
    val = build_dataset(_cfg(), "val")
    assert not torch.equal(val[0][0], ds[0][0])  # disjoint seeds for the two splits


def test_random_resized_crop_changes_views():
    ds = build_dataset(_cfg(crop="random_resized", hflip=True), "train")
    torch.manual_seed(0)
    a = ds[0][0]
    b = ds[0][0]
    assert a.shape == b.shape == (3, 16, 16) and not torch.equal(a, b)


@pytest.mark.skipif(not os.path.exists(FASHION), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_idx_files():
    ds = build_dataset(_cfg(name="fashion_mnist", root=FASHION, image_size=32, num_train=100), "train")
    x, y, i = ds[0]
    assert len(ds) == 100 and x.shape == (3, 32, 32)
    assert torch.equal(x[0], x[1])  # grey replicated to 3 channels
    assert len(build_dataset(_cfg(name="fashion_mnist", root=FASHION, num_val=None), "val")) == 10000


def test_split_batch():
    assert split_batch(2048, 8, None) == (256, 1)
    assert split_batch(2048, 8, 64) == (64, 4)
    assert split_batch(256, 1, 100) == (64, 4)
    with pytest.raises(ValueError, match="not divisible by the world size 3"):
        split_batch(256, 3, None)
