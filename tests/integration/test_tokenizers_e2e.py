"""`ldae-train experiment=ldae scale=smoke tokenizer=X` for every X (in process, shrunk further), and the
tokenizer artifact: reused by a second run with the same config and data, retrained on other data."""

import json

import pytest

from ldae.choices import TOKENIZERS

FAST = ["baselines=false", "trainer.max_epochs=1", "probe.epochs=1"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tokcache")


@pytest.mark.parametrize("name", TOKENIZERS)
def test_ldae_runs_with_every_tokenizer(compose, tmp_path, cache_dir, name):
    from ldae.train import run

    cfg = compose("experiment=ldae", "scale=smoke", f"tokenizer={name}", f"paths.cache_dir={cache_dir}", *FAST)
    res = run(cfg, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["tokenizer_name"] == name and saved["pretrain_loss"] > 0
    assert saved["tokenizer_psnr"] > 5 and (tmp_path / "tokenizer_recon.png").exists()
    basis = name in ("patch_pca", "none")
    assert saved["loss_weighting"] == ("per_component" if basis else "unweighted_pixel_mse")
    if name == "vqgan":  # smoke: LPIPS on a random VGG, and the row says so
        assert "perceptual loss with random backbone (not the paper's)" in saved["notes"]
        assert res["tokenizer"]["cached"] is False and "perceptual" in res["tokenizer"]["loss_terms"]
    else:
        assert "notes" not in saved
    if name in ("patch_ae", "patch_vae", "vqgan"):
        assert (tmp_path / "csv" / "tokenizer" / "metrics.csv").exists()


def test_trained_tokenizer_is_reused_not_retrained(compose, tmp_path, cache_dir, monkeypatch):
    from ldae import stages
    from ldae.data import build_dataset
    from ldae.stages import fit_tokenizer

    calls = []
    real_fit = stages.fit_trainable  # the fit stage trains a trainable tokenizer through it

    def counting_fit(tokenizer, batches, logger=None):
        calls.append(tokenizer.name)
        return real_fit(tokenizer, batches, logger=logger)

    monkeypatch.setattr(stages, "fit_trainable", counting_fit)
    base = ["experiment=ldae", "scale=smoke", "tokenizer=patch_vae", f"paths.cache_dir={tmp_path}"]
    cfg = compose(*base)
    train = build_dataset(cfg.data, "train", augment=False)
    _, r1 = fit_tokenizer(cfg, train)
    _, r2 = fit_tokenizer(compose(*base), train)
    assert not r1["cached"] and r2["cached"] and r1["key"] == r2["key"] and calls == ["patch_vae"]
    other = compose(*base, "data.seed=1")  # other data: another key, trained again
    _, r3 = fit_tokenizer(other, build_dataset(other.data, "train", augment=False))
    assert not r3["cached"] and r3["key"] != r1["key"] and len(calls) == 2
    changed = compose(*base, "tokenizer.lr=2e-3")  # another training config: another key
    _, r4 = fit_tokenizer(changed, train)
    assert not r4["cached"] and len(calls) == 3


def test_second_ldae_run_loads_the_vqgan_artifact(compose, tmp_path, cache_dir, monkeypatch):
    """Runs after the parametrized test above filled `cache_dir` with the vqgan artifact."""
    from ldae import stages
    from ldae.train import run

    def no_training(tokenizer, batches, logger=None):
        raise AssertionError("the tokenizer was trained again")

    cfg = compose("experiment=ldae", "scale=smoke", "tokenizer=vqgan", f"paths.cache_dir={cache_dir}", *FAST)
    if not list(cache_dir.glob("tokenizers/vqgan-*.pt")):
        run(cfg, tmp_path / "first")
    monkeypatch.setattr(stages, "fit_trainable", no_training)
    res = run(cfg, tmp_path / "second")
    assert res["tokenizer"]["cached"] is True


def test_latent_cache_shards_by_rank_and_pretrains(compose, tmp_path):
    import threading

    import torch

    from ldae.data import build_dataset
    from ldae.stages import fit_tokenizer
    from ldae.tokenizers.latent_cache import LatentDataset, build_latent_cache
    from ldae.train import run

    ov = ["experiment=ldae", "scale=smoke", "tokenizer=patch_vae", f"paths.cache_dir={tmp_path / 'c'}",
          "target.input=latent", "target.predict=eps", "target.lambda_t=one"]
    cfg = compose(*ov)
    train = build_dataset(cfg.data, "train", augment=False)
    tok, _ = fit_tokenizer(cfg, train)
    # two "ranks" write disjoint shards; rank 0 writes the index once all exist
    other = threading.Thread(target=build_latent_cache, args=(tok, train, tmp_path / "lc"),
                             kwargs={"rank": 1, "world": 2, "shard_size": 64})
    other.start()
    build_latent_cache(tok, train, tmp_path / "lc", rank=0, world=2, shard_size=64)
    other.join(60)
    ds = LatentDataset(tmp_path / "lc")
    assert len(ds) == len(train) == 256 and len(list((tmp_path / "lc").glob("shard-*.pt"))) == 4
    mean, logvar, y, i = ds[5]
    x = train[5][0][None]
    tok.eval()
    assert torch.allclose(mean[0], tok.posterior(x)[0][0], atol=1e-5)  # the stored posterior, flip 0
    assert torch.allclose(mean[1], tok.posterior(x.flip(-1))[0][0], atol=1e-5)  # and the mirrored image
    res = run(compose(*ov, "tokenizer.latent_cache=true", *FAST), tmp_path / "run")
    assert "latent_cache" in res["tokenizer"] and res["pretrain_loss"] > 0


def test_latent_cache_needs_a_latent_objective(compose):
    from ldae.config import ConfigError, validate

    with pytest.raises(ConfigError, match="tokenizer.latent_cache=true needs a latent-space objective"):
        validate(compose("experiment=ldae", "tokenizer=vqgan", "tokenizer.latent_cache=true"))
