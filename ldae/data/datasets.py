"""Datasets: every item is an ImageBatch (image (3, H, W) float in [-1, 1], label, dataset index).

The index travels with the sample so the corruption can key its randomness on it (DESIGN.md section 2).
Small datasets (shapes, Fashion-MNIST, CIFAR-10) live in memory as uint8, resized once at load time;
imagefolder decodes files in loader workers.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ldae.choices import CROPS, DATASETS, IMAGE_EXTENSIONS, builder, check, fashion_mnist_files
from ldae.data.batch import ImageBatch


class DataError(ValueError):
    """Missing or unusable data: the message names the path and what was expected."""


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 (.., 3, H, W) -> float in [-1, 1] (DiT's pixel range)."""
    return x.float().div_(127.5).sub_(1.0)


def train_transform(image_size: int, crop: str, hflip: bool, min_scale: float):
    """Augmentation on uint8 CHW tensors; None when the paper's default (center crop, no flip) applies.
    min_scale: RandomResizedCrop's smallest area (data.crop_min_scale; the probes' augmentation sets its own)."""
    check("data.crop", crop, CROPS)
    ops = []
    if crop == "random_resized":
        ops.append(v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), antialias=True))
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    return v2.Compose(ops) if ops else None


class TensorImageDataset(Dataset):
    """In-memory uint8 images (N, 3, H, W) and labels (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None):
        assert images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] == 3, images.shape
        self.images, self.labels, self.transform = images, labels.long(), transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return ImageBatch(to_unit_range(x), self.labels[i], i)


def resize_center(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size): resize the short side, center crop (ADM/DiT style)."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    out = []
    for chunk in images.split(4096):
        out.append(v2.functional.center_crop(v2.functional.resize(chunk, size, antialias=True), size))
    return torch.cat(out)


def _subset(images: torch.Tensor, labels: torch.Tensor, n: int | None):
    return (images, labels) if n is None else (images[:n], labels[:n])


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally .gz): big-endian header of dims, then uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(root: str, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    root_p = Path(root)
    files = fashion_mnist_files(root_p, split)
    if files is None and download:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root_p), train=split == "train", download=True)
        files = fashion_mnist_files(root_p, split)
    if files is None:
        raise DataError(f"Fashion-MNIST files not found in data.root={root}: expected "
                        f"{'train' if split == 'train' else 't10k'}-images-idx3-ubyte.gz; install Debian's "
                        f"dataset-fashion-mnist or set data.download=true")
    imgs = torch.from_numpy(_read_idx(files[0]).copy())  # (N, 28, 28)
    labels = torch.from_numpy(_read_idx(files[1]).astype(np.int64))
    return imgs[:, None].expand(-1, 3, -1, -1).contiguous(), labels  # grey -> 3 channels


def load_cifar10(root: str, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(root, train=split == "train", download=download)
    except RuntimeError as e:
        raise DataError(f"CIFAR-10 not found in data.root={root} ({e}); set data.download=true to fetch it") from None
    return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)




class ImageFolderDataset(Dataset):
    """root/{train,val}/CLASS/*: decoded, resized (short side) and center-cropped in the loader workers.

    With labels=False a split is any tree of images (label -1). An unreadable or corrupt file is skipped:
    its slot is filled by the next readable image, and the skips are counted (`take_bad_count`) so the
    caller warns once per epoch instead of crashing mid-run.
    """

    def __init__(self, root: str, split: str, image_size: int, crop: str, hflip: bool, limit: int | None,
                 labels: bool, min_scale: float):
        import multiprocessing as mp

        from torchvision.datasets.folder import default_loader

        folder = self.folder = Path(root) / split
        if not folder.is_dir():
            raise DataError(f"data.root={root} has no '{split}' folder: expected {folder}/CLASS/*.JPEG")
        if labels:
            classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
            if not classes:
                raise DataError(f"no class folders in {folder}: expected {folder}/CLASS/*.JPEG "
                                "(or data.labels=false for a folder of unlabelled images)")
            self.samples = []
            for k, c in enumerate(classes):
                files = _image_files(folder / c)
                if not files:
                    raise DataError(f"class folder {folder / c} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
                self.samples += [(f, k) for f in files]
        else:
            self.samples = [(f, -1) for f in _image_files(folder)]
        if not self.samples:
            raise DataError(f"no images in {folder} (the {split} split is empty)")
        if limit is not None:
            g = torch.Generator().manual_seed(0)
            keep = torch.randperm(len(self.samples), generator=g)[:limit].sort().values
            self.samples = [self.samples[i] for i in keep]
        self.loader = default_loader
        self._bad = mp.Value("i", 0)  # shared with loader workers
        ops = [v2.ToImage()]
        if crop == "random_resized":
            ops.append(v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), antialias=True))
        else:
            ops += [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
        if hflip:
            ops.append(v2.RandomHorizontalFlip())
        self.transform = v2.Compose(ops)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        for k in range(len(self.samples)):
            j = (i + k) % len(self.samples)
            path, label = self.samples[j]
            try:
                img = self.loader(str(path))
            except Exception:  # noqa: BLE001 - PIL raises many kinds; any unreadable file is skipped
                with self._bad.get_lock():
                    self._bad.value += 1
                continue
            return ImageBatch(to_unit_range(self.transform(img)), label, i)
        raise DataError(f"no readable image among the {len(self.samples)} files of {self.folder}; allowed: "
                        f"readable image files")

    def take_bad_count(self) -> int:
        """Skipped files since the last call (then reset to 0)."""
        with self._bad.get_lock():
            n, self._bad.value = self._bad.value, 0
        return n


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def warn_bad_images(dataset, what: str) -> int:
    """One warning with the number of unreadable files skipped since the last call, if any."""
    while hasattr(dataset, "dataset") and not hasattr(dataset, "take_bad_count"):  # Subset and friends
        dataset = dataset.dataset
    take = getattr(dataset, "take_bad_count", None)
    n = take() if take is not None else 0
    if n:
        import logging

        logging.getLogger("ldae").warning("%s: skipped %d unreadable image file(s) (each replaced by the next "
                                          "readable one)", what, n)
    return n


def to_model_image(img, size: int) -> torch.Tensor:
    """Any image a dataset returns -> (3, size, size) float in [-1, 1], the pretraining input: a PIL image or
    a (C, H, W) / (H, W) tensor or array, uint8 in 0..255 or float in [0, 1] (torchvision's ToTensor range);
    grey is repeated to 3 channels, an alpha channel dropped; the short side resized, then center-cropped."""
    if not isinstance(img, torch.Tensor):
        img = v2.functional.pil_to_tensor(img) if hasattr(img, "mode") else torch.as_tensor(np.asarray(img))
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3 or img.shape[0] not in (1, 3, 4):
        raise DataError(f"a dataset image of shape {tuple(img.shape)}; allowed: (C, H, W) or (H, W) with C = 1, 3 or 4")
    x = img.float().div(255.0) if img.dtype == torch.uint8 else img.float()
    x = x[:3] if x.shape[0] >= 3 else x.expand(3, -1, -1)
    if tuple(x.shape[-2:]) != (size, size):
        x = v2.functional.center_crop(v2.functional.resize(x, size, antialias=True), size)
    return x.mul(2.0).sub(1.0).clamp(-1.0, 1.0)


class ConvertedDataset(Dataset):
    """A user's dataset (data._target_) as ldae reads data: items (image (3, S, S) in [-1, 1], label, index),
    a seeded random subset of `limit` items (never a prefix), the split's augmentation on top."""

    def __init__(self, inner, image_size: int, limit: int | None, transform=None, seed: int = 0):
        self.inner, self.size, self.transform = inner, int(image_size), transform
        n = len(inner)
        if n == 0:
            raise DataError(f"the dataset {type(inner).__name__} is empty")
        keep = torch.arange(n)
        if limit is not None and limit < n:
            keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values
        self.keep = keep.tolist()

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, i: int):
        item = self.inner[self.keep[i]]
        img, label = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, -1)
        x = to_model_image(img, self.size)
        if self.transform is not None:
            x = self.transform(x)
        return ImageBatch(x, torch.as_tensor(int(label)), i)


def build_dataset(cfg, split: str, augment: bool = True) -> Dataset:
    """cfg: the `data` config node; split: train | val. augment=False gives the clean (center-crop) view; the
    augmentation is cfg.crop (random_resized keeps area >= cfg.crop_min_scale) and cfg.hflip.
    A node with `_target_` is a user's dataset (ldae.plugins), built with split= and converted."""
    size = cfg.image_size
    crop, hflip = (cfg.crop, cfg.hflip) if augment and split == "train" else ("center", False)
    limit = cfg.num_train if split == "train" else cfg.num_val
    transform = train_transform(size, crop, hflip, float(cfg.crop_min_scale))
    from ldae import plugins

    if plugins.is_plugin(cfg):
        ldae_args = {"split": split, "root": cfg.get("root"), "image_size": size, "download": cfg.get("download")}
        inner = plugins.instantiate(cfg, "data", ldae_args)
        return ConvertedDataset(inner, size, limit, transform, seed=int(cfg.seed))
    if cfg.name not in DATASETS:
        raise DataError(f"unknown data '{cfg.name}'; allowed: {', '.join(DATASETS)}")
    return builder(DATASETS, cfg.name)(cfg, split, limit, crop, hflip, transform)


# Each reader: (data node, split, limit, crop, hflip, the uint8 augmentation) -> the split's Dataset.
def shapes_split(cfg, split: str, limit, crop: str, hflip: bool, transform) -> Dataset:
    from ldae.data.shapes import make_shapes

    # Train and val come from disjoint seeds; the generator is deterministic per (seed, index).
    imgs, labels = make_shapes(limit, cfg.image_size, seed=cfg.seed * 2 + (split != "train"),
                               num_classes=cfg.num_classes, difficulty=cfg.difficulty)
    images, labels = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)
    return TensorImageDataset(resize_center(images, cfg.image_size), labels, transform)


def fashion_mnist_split(cfg, split: str, limit, crop: str, hflip: bool, transform) -> Dataset:
    images, labels = _subset(*load_fashion_mnist(cfg.root, split, cfg.download), limit)
    return TensorImageDataset(resize_center(images, cfg.image_size), labels, transform)


def cifar10_split(cfg, split: str, limit, crop: str, hflip: bool, transform) -> Dataset:
    images, labels = _subset(*load_cifar10(cfg.root, split, cfg.download), limit)
    return TensorImageDataset(resize_center(images, cfg.image_size), labels, transform)


def imagefolder_split(cfg, split: str, limit, crop: str, hflip: bool, transform) -> Dataset:
    # Decoded per item from files of any size: its own PIL-side crop instead of the uint8 `transform`.
    return ImageFolderDataset(cfg.root, split, cfg.image_size, crop, hflip, limit, labels=cfg.labels,
                              min_scale=float(cfg.crop_min_scale))


def data_fingerprint(cfg) -> dict:
    """What identifies the training images (the tokenizer cache key includes it)."""
    keys = ("name", "root", "image_size", "num_train", "seed", "difficulty", "num_classes")
    fp = {k: cfg.get(k) for k in keys}
    from ldae import plugins

    if plugins.is_plugin(cfg):  # a user's dataset: its target and own arguments
        fp["plugin"] = plugins.identity(cfg, "data")
    if cfg.name != "shapes" and cfg.root and os.path.exists(cfg.root):
        fp["root_mtime"] = int(os.path.getmtime(cfg.root))
    return fp
