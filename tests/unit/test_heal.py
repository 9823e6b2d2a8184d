"""Cache files heal: a corrupt tokenizer artifact or feature-cache file is moved aside and recomputed."""

import logging

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from ldae.tokenizers import build_tokenizer, fit_or_load


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _warnings(caplog, text):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


def test_a_truncated_tokenizer_artifact_is_moved_aside_and_refitted(tmp_path, caplog):
    cfg = OmegaConf.create({"name": "patch_pca", "patch_size": 4, "latent_dim": 8, "latent_units": "absolute",
                            "center": True, "scaling": "global", "num_patches": 10000, "seed": 0})
    x = torch.rand(32, 3, 16, 16) * 2 - 1
    calls = []

    def batches():
        calls.append(1)
        return [x]

    first = build_tokenizer(cfg)
    r1 = fit_or_load(first, batches, {"data": "a"}, str(tmp_path), rank=0)
    path = tmp_path / "tokenizers" / r1["path"].rsplit("/", 1)[1]
    for corrupt in (lambda p: _truncate(p), lambda p: p.write_text("not a torch file\n")):
        corrupt(path)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            again = build_tokenizer(cfg)
            r2 = fit_or_load(again, batches, {"data": "a"}, str(tmp_path), rank=0)
        assert not r2["cached"] and r2["key"] == r1["key"]  # refitted under the same key
        assert len(_warnings(caplog, "cannot be loaded")) == 1 and path.name in _warnings(caplog, "cannot be loaded")[0]
        assert (path.parent / (path.name + ".corrupt")).is_file()
        assert torch.equal(again.components, first.components)  # the refit is the same fit
        third = build_tokenizer(cfg)
        assert fit_or_load(third, batches, {"data": "a"}, str(tmp_path), rank=0)["cached"]  # whole again
    assert len(calls) == 3


def test_a_truncated_feature_cache_file_is_moved_aside_and_extracted_again(tmp_path, caplog):
    from ldae.lit.features import PixelFeatures, cached_features

    ds = TensorDataset(torch.randn(8, 3, 2, 2), torch.arange(8), torch.arange(8))
    f1, y1, i1 = cached_features(PixelFeatures(2), DataLoader(ds, batch_size=4), "k", tmp_path)
    path = tmp_path / "k.pt"
    bad_shape = tmp_path / "other.pt"
    torch.save({"features": torch.zeros(3, 2), "labels": torch.zeros(5)}, bad_shape)
    for key, corrupt in (("k", _truncate), ("other", lambda p: None)):
        corrupt(tmp_path / f"{key}.pt")
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            f2, y2, i2 = cached_features(PixelFeatures(2), DataLoader(ds, batch_size=4), key, tmp_path)
        assert not i2["hit"] and torch.equal(f1, f2) and torch.equal(y1, y2)
        assert len(_warnings(caplog, "cannot be loaded")) == 1
        assert (tmp_path / f"{key}.pt.corrupt").is_file()
        f3, _, i3 = cached_features(PixelFeatures(2), DataLoader(ds, batch_size=4), key, tmp_path)
        assert i3["hit"] and torch.equal(f3, f1)
    assert path.is_file()
