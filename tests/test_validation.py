"""Bad configs and bad data: one clear line, a non-zero exit, no traceback, before any work starts."""

from pathlib import Path

import pytest
import torch
from conftest import run_cli

from ldae.config import ConfigError


# (command line, the start of the first stderr line after "ldae-train: error: ")
BAD_CONFIGS = [
    (["schedule=no_such_schedule"], "unknown schedule 'no_such_schedule'; allowed: cosine, ddpm_linear"),
    (["tokenizer.latent_dim=0"], "tokenizer.latent_dim=0 is out of range; allowed: 1..768"),
    (["tokenizer.latent_units=absolute", "tokenizer.latent_dim=49"],
     "tokenizer.latent_dim=49 is out of range; allowed: 1..48 (the patch dimension D = 3*4*4)"),
    (["data.batch_size=0"], "data.batch_size=0 must be an integer >= 1"),
    (["optim.base_lr=0"], "optim.base_lr=0 must be > 0"),
    (["optim.base_lr=-1e-4"], "optim.base_lr=-0.0001 must be > 0"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be an integer >= 1"),
    (["probe.epochs=0"], "probe.epochs=0 must be an integer >= 1"),
    (["data.image_size=30", "tokenizer=vqgan"], "data.image_size=30 is not divisible by tokenizer.patch_size=4"),
    (["data=imagefolder", "data.root=/nonexistent"], "data.root=/nonexistent has no 'train' folder"),
    (["tokenizer=vqgan", "tokenizer.pretrained_path=/nonexistent/sd-vae"],
     "tokenizer.pretrained_path=/nonexistent/sd-vae holds no config.json"),
    (["tokenizer=vqgan", "tokenizer.perceptual.random_backbone=false"],
     "tokenizer.perceptual.weight=1.0 needs tokenizer.perceptual.backbone_path (a local torchvision vgg16"),
    (["model.class_cond=true", "data.labels=false"], "model.class_cond=true needs labels, but data.labels=false"),
    (["data.batch_size=64", "trainer.accelerator=cpu", "trainer.devices=3"],
     "data.batch_size=64 is not divisible by the world size 3"),
    (["checkpoint.every_n_steps=0"], "checkpoint.every_n_steps=0 must be null or an integer >= 1"),
    (["optim.on_nonfinite=explode"], "unknown optim.on_nonfinite 'explode'; allowed: stop, skip"),
    (["resume=maybe"], "unknown resume 'maybe'; allowed: auto, never"),
    (["optim.gradient_clip=-1"], "optim.gradient_clip=-1 must be null (no clipping) or > 0"),
    (["optim.base_lrr=1"], "unknown config key 'optim.base_lrr'"),
    (["target=nope"], "unknown target 'nope'; allowed:"),
    (["tokenizer=vqgan", "model.name=micro-1-1/4"], "model patch 4 (model.name=micro-1-1/4) does not match tokenizer.dit_patch=2"),
]


@pytest.mark.parametrize("args, message", BAD_CONFIGS, ids=[" ".join(a) for a, _ in BAD_CONFIGS])
def test_bad_config_is_one_line_and_a_nonzero_exit(args, message):
    p = run_cli("ldae-train", "experiment=ldae", "scale=smoke", *args)
    assert p.returncode != 0
    first = p.stderr.splitlines()[0] if p.stderr else ""
    assert first.startswith("ldae-train: error: " + message), p.stderr[-1500:]
    assert "Traceback" not in p.stderr + p.stdout


def test_image_objectives_need_a_decoder(compose, monkeypatch):
    from ldae import choices
    from ldae.config import validate

    validate(compose("tokenizer=patch_pca"))
    monkeypatch.setattr(choices, "NO_DECODER", ("patch_pca",))  # as an encoder-only tokenizer would declare
    with pytest.raises(ConfigError, match=r"^tokenizer=patch_pca has no decoder, but target.input=image"):
        validate(compose("tokenizer=patch_pca"))
    validate(compose("tokenizer=patch_pca", "target=eps"))  # a latent objective needs no decoder


def _png(path: Path, seed: int) -> None:
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    arr = torch.randint(0, 255, (20, 24, 3), generator=g, dtype=torch.uint8).numpy()
    Image.fromarray(arr).save(path)


def _folder(root: Path, classes=("a", "b"), per_class=3) -> Path:
    for split in ("train", "val"):
        for k, c in enumerate(classes):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                _png(root / split / c / f"{i}.png", 10 * k + i)
    return root


def test_corrupt_images_are_skipped_and_counted(tmp_path, caplog):
    from ldae.data.datasets import ImageFolderDataset, warn_bad_images

    root = _folder(tmp_path)
    (root / "train" / "a" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (root / "train" / "b" / "9.jpg").write_bytes(b"")  # empty file
    ds = ImageFolderDataset(str(root), "train", 16, "center", False, None)
    assert len(ds) == 7
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1)
    xs, ys, idx = zip(*loader)
    x = torch.cat(xs)
    assert x.shape == (7, 3, 16, 16) and torch.isfinite(x).all() and torch.cat(idx).tolist() == list(range(7))
    with caplog.at_level("WARNING", logger="ldae"):
        assert warn_bad_images(ds, "epoch 0 (train)") == 2  # counted across the worker process
    assert "skipped 2 unreadable image file(s)" in caplog.text
    assert warn_bad_images(ds, "epoch 1 (train)") == 0  # the count restarts every epoch


def test_empty_class_folder_and_empty_split_are_clear_errors(tmp_path):
    from ldae.data.datasets import DataError, ImageFolderDataset

    root = _folder(tmp_path)
    (root / "train" / "empty_class").mkdir()
    with pytest.raises(DataError, match=r"class folder .*empty_class holds no images"):
        ImageFolderDataset(str(root), "train", 16, "center", False, None)
    (root / "nothing").mkdir()
    with pytest.raises(DataError, match=r"no class folders in .*nothing"):
        ImageFolderDataset(str(root), "nothing", 16, "center", False, None)
    with pytest.raises(DataError, match=r"no images in .*nothing \(the nothing split is empty\)"):
        ImageFolderDataset(str(root), "nothing", 16, "center", False, None, labels=False)
    flat = ImageFolderDataset(str(root), "val", 16, "center", False, None, labels=False)
    assert len(flat) == 6 and flat[0][1] == -1
