"""A tokenizer is fitted on a seeded random sample of the whole training set, never on a prefix.

Image folders list their files class by class, so a prefix of `fit_images` images (or a patch budget spent
on the first batches) fits the bases of the first classes only. The folder below is class-sorted and its
classes have different patch statistics; the fit from a sample of a quarter of it must match the fit on all
of it. Tolerances, stated in units of the data: the mean's error over the data's spread (the square root of
the total patch variance) < 0.4, and the largest principal angle of the d-dim subspace < 20°. Measured at
smoke size (d = 2): the random sample of 40 images lands at 0.19 and 4.8°, the class-0 prefix at 0.85 and
89°.
"""

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from ldae.data import build_dataset
from ldae.tokenizers import PatchPCA

CLASSES, PER_CLASS, SIZE = 4, 40, 16


def _class_image(k: int, rng: np.random.Generator) -> np.ndarray:
    """Class k: its own colour offset and a grating of its own orientation, plus noise (uint8 HWC)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    ang = k * math.pi / CLASSES
    wave = np.sin((np.cos(ang) * xx + np.sin(ang) * yy) * 1.3 + rng.uniform(0, 2 * math.pi))
    base = np.array([[60, 200, 120], [200, 60, 120], [120, 120, 220], [220, 200, 40]][k], np.float32)
    img = base + 50 * wave[..., None] + rng.normal(0, 12, (SIZE, SIZE, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sorted_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("sorted_folder")
    rng = np.random.default_rng(0)
    for split, n in (("train", PER_CLASS), ("val", 4)):
        for k in range(CLASSES):
            d = root / split / f"class_{k}"
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_class_image(k, rng)).save(d / f"{i:03d}.png")
    return root


def _principal_angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest principal angle between the column spans of a and b (both (D, d), orthonormal)."""
    s = torch.linalg.svdvals(a.T.double() @ b.double()).clamp(max=1.0)
    return math.degrees(math.acos(float(s.min())))


def _mean_error(fit: PatchPCA, ref: PatchPCA) -> float:
    """|mean - mean_ref| in units of the data's spread (sqrt of the total patch variance)."""
    return float((fit.mean - ref.mean).norm() / ref.eigenvalues.sum().sqrt())


def _fit_all(images: torch.Tensor, d: int) -> PatchPCA:
    ref = PatchPCA(patch_size=4, latent_dim=d, num_patches=10**9)
    ref.fit([images])
    return ref


def test_fit_images_are_a_random_sample_of_a_class_sorted_folder(compose, sorted_folder):
    from ldae.stages import fit_tokenizer

    cfg = compose("data=imagefolder", f"data.root={sorted_folder}", f"data.num_classes={CLASSES}",
                  "data.num_workers=0", "tokenizer=patch_pca", "tokenizer.cache=false",
                  f"tokenizer.fit_images={PER_CLASS}",  # a quarter: a prefix is class 0 alone
                  "tokenizer.num_patches=100000")
    train = build_dataset(cfg.data, "train", augment=False)
    assert [train.samples[i][1] for i in range(PER_CLASS)] == [0] * PER_CLASS  # class-sorted indeed
    tok, _ = fit_tokenizer(cfg, train)
    images = torch.stack([train[i][0] for i in range(len(train))])
    ref = _fit_all(images, tok.latent_dim)
    d = tok.latent_dim
    err = _mean_error(tok, ref)
    angle = _principal_angle_deg(tok.components[:, :d], ref.components[:, :d])
    assert err < 0.4, f"fitted mean {err:.3f} spreads from the all-data mean"
    assert angle < 20, f"fitted subspace {angle:.1f}° from the all-data one"


def test_patch_budget_is_spread_over_the_whole_pass(sorted_folder):
    """A budget of a quarter of the patches, streamed class by class, still sees every class."""
    data = OmegaConf.create({"name": "imagefolder", "root": str(sorted_folder), "image_size": SIZE,
                             "crop": "center", "crop_min_scale": 0.2, "hflip": False, "num_train": None, "num_val": None, "labels": True})
    train = build_dataset(data, "train", augment=False)
    images = torch.stack([train[i][0] for i in range(len(train))])  # (160, 3, 16, 16), class-sorted
    total = images.shape[0] * (SIZE // 4) ** 2
    pca = PatchPCA(patch_size=4, latent_dim=6, num_patches=total // 4, seed=1)
    stats = pca.fit(list(images.split(16)))  # ten batches, each of one class
    assert stats["keep_probability"] == pytest.approx(0.25)
    assert abs(stats["num_patches"] - total // 4) < 0.1 * total / 4
    ref = _fit_all(images, 6)
    assert _mean_error(pca, ref) < 0.4
    assert _principal_angle_deg(pca.components[:, :6], ref.components[:, :6]) < 20


def test_random_subset_is_seeded_and_spans_the_set():
    from ldae.data.sampling import random_subset, subset_identity

    ds = list(range(1000))
    a, b, c = random_subset(ds, 100, 0), random_subset(ds, 100, 0), random_subset(ds, 100, 1)
    assert a.indices == b.indices and a.indices != c.indices
    assert max(a.indices) > 500 and a.indices == sorted(a.indices)  # not a prefix; in index order
    assert random_subset(ds, None, 0) is ds and random_subset(ds, 1000, 0) is ds
    assert subset_identity(a) == subset_identity(b) != subset_identity(c) and subset_identity(ds) == "all"
