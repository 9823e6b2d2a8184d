"""Tokenizers and datasets are registries like the schedules: the config check and the builder read one table,
so a new one is its function and one entry (ldae/choices.py)."""

import pytest
import torch
from omegaconf import OmegaConf

from helpers import ROOT
from ldae import choices
from ldae.data import build_dataset
from ldae.data.datasets import TensorImageDataset
from ldae.errors import ConfigError
from ldae.tokenizers import Pixels, build_tokenizer


@pytest.mark.parametrize("table, group", [(choices.TOKENIZERS, "tokenizer"), (choices.DATASETS, "data")])
def test_every_entry_imports_and_has_its_conf_option(table, group):
    options = {p.stem for p in (ROOT / "conf" / group).glob("*.yaml")}
    for name in table:
        assert callable(choices.builder(table, name)), name
        assert name in options, f"{group}={name} has a builder but no conf/{group}/{name}.yaml"


def _tiny_split(cfg, split, limit, crop, hflip, transform):
    n = 3 if split == "train" else 2
    return TensorImageDataset(torch.zeros(n, 3, cfg.image_size, cfg.image_size, dtype=torch.uint8),
                              torch.arange(n), transform)


def _pixels_too(cfg):
    return Pixels(patch_size=cfg.patch_size)


def test_a_new_dataset_is_one_entry(monkeypatch):
    monkeypatch.setitem(choices.DATASETS, "tiny", f"{__name__}:_tiny_split")
    node = OmegaConf.create({"name": "tiny", "image_size": 8, "crop": "center", "crop_min_scale": 0.2,
                             "hflip": False, "num_train": None, "num_val": None})
    train, val = build_dataset(node, "train"), build_dataset(node, "val")
    assert (len(train), len(val)) == (3, 2) and tuple(train[0].x.shape) == (3, 8, 8)
    with pytest.raises(ValueError, match="unknown data 'nope'; allowed: shapes, fashion_mnist, cifar10, "
                                         "imagefolder, tiny"):
        build_dataset(OmegaConf.merge(node, {"name": "nope"}), "train")


def test_a_new_tokenizer_is_one_entry(monkeypatch):
    monkeypatch.setitem(choices.TOKENIZERS, "pixels_too", f"{__name__}:_pixels_too")
    tok = build_tokenizer(OmegaConf.create({"name": "pixels_too", "patch_size": 4}))
    assert isinstance(tok, Pixels) and tok.patch_size == 4
    with pytest.raises(ConfigError, match="unknown tokenizer 'nope'; allowed: vqgan, .*, none, pixels_too"):
        build_tokenizer(OmegaConf.create({"name": "nope", "patch_size": 4}))
