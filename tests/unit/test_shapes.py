"""Fast checks for the procedural shapes dataset (ldae.data.shapes)."""
import numpy as np
import pytest

from ldae.data.shapes import SHAPE_CLASSES, make_shapes


def test_class_names():
    assert isinstance(SHAPE_CLASSES, tuple)
    assert len(SHAPE_CLASSES) >= 10
    assert len(set(SHAPE_CLASSES)) == len(SHAPE_CLASSES)
    assert all(isinstance(c, str) for c in SHAPE_CLASSES)


@pytest.mark.parametrize("size", [16, 32])
def test_shapes_and_dtypes(size):
    x, y = make_shapes(37, size, seed=0)
    assert x.shape == (37, size, size, 3) and x.dtype == np.uint8
    assert y.shape == (37,) and y.dtype == np.int64
    assert y.min() >= 0 and y.max() < 10
    assert x.std() > 10  # not a blank image


def test_empty():
    x, y = make_shapes(0, 32, seed=0)
    assert x.shape == (0, 32, 32, 3) and y.shape == (0,)


def test_determinism():
    x1, y1 = make_shapes(80, 32, seed=3)
    x2, y2 = make_shapes(80, 32, seed=3)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    x3, y3 = make_shapes(80, 32, seed=4)
    assert not np.array_equal(x1, x3)
    assert not np.array_equal(y1, y3)


@pytest.mark.parametrize("difficulty", [0.0, 1.0])
def test_prefix_property(difficulty):
    xa, ya = make_shapes(10, 32, seed=7, difficulty=difficulty)
    xb, yb = make_shapes(150, 32, seed=7, difficulty=difficulty)
    np.testing.assert_array_equal(xa, xb[:10])
    np.testing.assert_array_equal(ya, yb[:10])
    xc, yc = make_shapes(70, 32, seed=7, difficulty=difficulty)
    np.testing.assert_array_equal(xc, xb[:70])
    np.testing.assert_array_equal(yc, yb[:70])


@pytest.mark.parametrize("num_classes", [10, len(SHAPE_CLASSES)])
def test_all_classes_present_and_balanced(num_classes):
    _, y = make_shapes(200, 16, seed=0, num_classes=num_classes)
    counts = np.bincount(y, minlength=num_classes)
    assert len(counts) == num_classes
    assert counts.min() > 0
    assert counts.max() - counts.min() <= 0.5 * 200 / num_classes


def test_difficulty_zero_is_clean_and_centred():
    x, y = make_shapes(64, 32, seed=0, difficulty=0.0)
    # same class -> identical image (no nuisances at all)
    for c in range(10):
        imgs = x[y == c]
        assert len(imgs) >= 2
        assert np.array_equal(imgs[0], imgs[1])
    # different classes -> different images
    firsts = np.stack([x[y == c][0] for c in range(10)]).reshape(10, -1)
    assert len({f.tobytes() for f in firsts}) == 10


def test_shape_has_contrast():
    # the shape must stay visible: the image must contain a clear luminance step
    x, _ = make_shapes(64, 32, seed=1)
    lum = x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    flat = lum.reshape(len(lum), -1)
    spread = np.percentile(flat, 95, axis=1) - np.percentile(flat, 5, axis=1)
    assert spread.min() > 0.2 * 255


def test_mean_colour_not_predictive():
    # foreground/background colours are independent of the class and shapes have equal
    # area, so class-conditional mean image colours should all be about the same.
    x, y = make_shapes(2000, 16, seed=0)
    m = x.reshape(len(x), -1, 3).mean(axis=1) / 255.0          # (n, 3) mean RGB
    overall_std = m.std(axis=0)                                 # per-image spread (~0.18)
    class_means = np.stack([m[y == c].mean(axis=0) for c in range(10)])
    # deviation of each class mean from the global mean, in units of its standard error
    n_c = np.bincount(y, minlength=10)[:, None]
    z = (class_means - m.mean(axis=0)) / (overall_std / np.sqrt(n_c))
    assert np.abs(z).max() < 4.5
    # and the spread of the 10 class means is what sampling noise gives (< 5 standard errors, ~0.065)
    se = (overall_std / np.sqrt(n_c.min())).max()
    assert (class_means.max(axis=0) - class_means.min(axis=0)).max() < 5 * se


def test_same_scene_across_resolutions():
    # labels do not depend on image size
    _, y16 = make_shapes(50, 16, seed=2)
    _, y64 = make_shapes(50, 64, seed=2)
    np.testing.assert_array_equal(y16, y64)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        make_shapes(10, 32, seed=0, num_classes=len(SHAPE_CLASSES) + 1)
    with pytest.raises(ValueError):
        make_shapes(10, 32, seed=0, difficulty=-1.0)
