"""Procedural "shapes" image-classification dataset (generated on the fly, no download).

Each image shows one filled shape on a background.  The class is the *shape* only:

    circle, square, triangle, cross, star, ring, crescent, L_shape,
    ellipse, half_disc, T_shape, heart            (``SHAPE_CLASSES``)

``num_classes=k`` uses the first ``k`` of them (default 10).

Nuisance factors, all drawn independently of the class and scaled by ``difficulty``
(0 = white, upright, centred, fixed-size shape on a black, clean background):

* position  -- uniform anywhere on the frame seen as a torus (``WRAP_TRANSLATION``): a shape
  leaving one edge re-enters at the opposite one, so the mean image of every class is the
  same flat field and a linear read-out of pixel positions learns nothing (with the shape
  kept inside the frame instead, ldae's linear probe on raw pixels reached 36-41%);
* scale     -- log-uniform size jitter (classes are also normalised to equal area, so
  the amount of foreground says nothing about the class);
* rotation  -- uniform angle, the full circle at ``difficulty >= 1``;
* colour    -- foreground and background colours are random (hue, saturation and
  luminance), with a guaranteed luminance gap between them so the shape always
  stays visible; the foreground is the lighter one (``FG_LIGHTER_PROB``: random
  polarity brought every method, raw pixels and l-DAE alike, to ~16% at scale=cpu);
* background texture -- a couple of mild, low-frequency coloured sinusoids
  (deliberately weak: heavily textured small images defeat every method);
* sensor noise -- i.i.d. Gaussian per pixel and channel.

Edges are anti-aliased with a one-pixel soft edge computed from exact (or near exact)
signed distance functions, evaluated on a rotated/scaled coordinate grid, batched
over images with numpy.

Determinism: samples are generated in fixed blocks of ``_BLOCK`` consecutive indices,
each block from ``np.random.default_rng([seed, block])``.  Sample ``i`` therefore only
depends on ``(seed, i, image_size, num_classes, difficulty)`` and never on ``n``
(``make_shapes(100, ...)[0][:10] == make_shapes(10, ...)[0]``).  Labels and scene
parameters do not depend on ``image_size`` either, so the same seed gives the same
scenes at every resolution (only the pixel noise differs).  Outputs are bit-exact for
a given numpy build (float32 transcendental functions may differ by an ulp elsewhere).

Measured at ``difficulty=1`` (torus translation, radius 0.30, 10 classes, 32 px, 2 CPU cores):
logistic regression on standardised raw pixels (10k train / 2k test) 10.1%, i.e. chance; at
``ldae-train experiment=ldae scale=cpu`` the same probe code gives raw pixels 11.0%, a random
encoder 10.4% and the pretrained l-DAE encoder 22.4%.  Chance is 10%.
"""
from __future__ import annotations

import numpy as np

__all__ = ["SHAPE_CLASSES", "make_shapes"]

SHAPE_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "cross",
    "star",
    "ring",
    "crescent",
    "L_shape",
    "ellipse",
    "half_disc",
    "T_shape",
    "heart",
)

# ----------------------------------------------------------------------------------
# Difficulty knobs (values at difficulty = 1; most are multiplied by `difficulty`).
# ----------------------------------------------------------------------------------
RADIUS_FRAC = 0.30          # nominal shape radius / image size (0.25 with in-frame translation: every method lost)
SCALE_JITTER = 1.35         # size varies in [R/1.35, R*1.35] (log-uniform) at difficulty 1
ROTATION_RANGE = np.pi      # +-180 deg at difficulty 1: orientation carries no information
TRANSLATE_FRAC = 1.0        # fraction of the free room (shape stays in frame): the full range (ldae's
                            # own probe on raw pixels still gets 36.3% at scale=cpu)
MIN_CONTRAST = 0.30         # min |luminance(fg) - luminance(bg)|; keeps shapes visible
MAX_CONTRAST = 0.75         # max luminance gap; leaves room for random luminance levels
FG_LIGHTER_PROB = 1.0       # P(fg lighter than bg); 0.5 (random polarity): pixels 16%, l-DAE at scale=cpu 16%, random 11%
TEXTURE_AMP = 0.06          # amplitude of each of the background sinusoids (mild on purpose)
TEXTURE_WAVES = 2           # number of background sinusoids (at most 2)
TEXTURE_MAX_FREQ = 1.5      # max sinusoid frequency in cycles per image (low frequency)
NOISE_STD = 0.04            # per-pixel Gaussian noise std (intensities in [0, 1])
EDGE_SOFTNESS = 1.0         # anti-aliasing ramp width in pixels
WRAP_TRANSLATION = True     # shapes wrap around the frame edges (a torus): the mean image of every class
                            # is the same flat field, so a linear probe on pixels cannot read position
CLASS_FREE_LAYOUT = True    # size cap and translation room from the largest class extent, not the own one
AREA_NORM = 1.0             # 1 = all classes get equal area, so "amount of ink" is uninformative

# Appearance at difficulty 0 (colour parameters are interpolated towards random).
_EASY_FG_LUM = 0.9
_EASY_BG_LUM = 0.1

_BLOCK = 64                 # samples per RNG block (determinism granularity)
_CHUNK_PIXELS = 1 << 17     # pixels rendered together (cache-friendly chunks)
_LUMA = np.array([0.299, 0.587, 0.114])

# Layout of the per-sample uniform parameter vector (drawn before the noise).
_P_SCALE, _P_ROT, _P_TX, _P_TY = 0, 1, 2, 3
_P_CONTRAST, _P_LO, _P_POL = 4, 5, 6
_P_FGCHROMA = slice(7, 10)
_P_BGCHROMA = slice(10, 13)
_P_FGSAT, _P_BGSAT = 13, 14
_P_TEX = 15                  # 6 numbers per wave: fx, fy, phase, r, g, b weights
_N_PARAMS = 32               # fixed, so tweaking knobs never shifts the random stream
_MAX_WAVES = (_N_PARAMS - _P_TEX) // 6


# ----------------------------------------------------------------------------------
# Signed distance functions.  Inputs are local coordinates (x right, y up) in units of
# the shape radius (every shape fits in roughly the unit disc); negative = inside.
# ----------------------------------------------------------------------------------
def _length(x, y):
    return np.sqrt(x * x + y * y)


def _sd_box(x, y, bx, by, cx=0.0, cy=0.0):
    qx = np.abs(x - cx) - bx
    qy = np.abs(y - cy) - by
    outside = _length(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _sd_convex_regular(x, y, n_sides, circumradius, angle0):
    """Max over edge half-planes (exact inside; slightly under-rounded at outer corners)."""
    apothem = float(circumradius * np.cos(np.pi / n_sides))
    d = None
    for k in range(n_sides):
        a = angle0 + np.pi / n_sides + 2 * np.pi * k / n_sides   # edge normal direction
        h = x * float(np.cos(a)) + y * float(np.sin(a)) - apothem
        d = h if d is None else np.maximum(d, h)
    return d


def _sd_polygon(x, y, verts):
    """Exact signed distance to a simple polygon (vertices as (k, 2) array)."""
    v = [(float(a), float(b)) for a, b in verts]      # python floats: keep float32 math
    d2 = (x - v[0][0]) ** 2 + (y - v[0][1]) ** 2
    inside = np.zeros(x.shape, dtype=bool)
    j = len(v) - 1
    for i in range(len(v)):
        ex, ey = v[j][0] - v[i][0], v[j][1] - v[i][1]
        wx, wy = x - v[i][0], y - v[i][1]
        t = np.clip((wx * ex + wy * ey) * (1.0 / (ex * ex + ey * ey)), 0.0, 1.0)
        bx, by = wx - ex * t, wy - ey * t
        d2 = np.minimum(d2, bx * bx + by * by)
        c1 = y >= v[i][1]
        c2 = y < v[j][1]
        c3 = ex * wy > ey * wx
        inside ^= (c1 == c2) & (c2 == c3)             # even-odd crossing rule
        j = i
    d = np.sqrt(d2)
    return np.where(inside, -d, d)


def _star_vertices(n=5, r_out=1.05, r_in=0.45):
    ang = np.pi / 2 + np.arange(2 * n) * np.pi / n
    r = np.where(np.arange(2 * n) % 2 == 0, r_out, r_in)
    return np.stack([r * np.cos(ang), r * np.sin(ang)], axis=1)


_STAR = _star_vertices()


def _sd_circle(x, y):
    return _length(x, y) - 0.95


def _sd_square(x, y):
    return _sd_box(x, y, 0.72, 0.72)


def _sd_triangle(x, y):
    # equilateral, pointing up, centroid at the origin
    return _sd_convex_regular(x, y - 0.0, 3, 1.05, np.pi / 2)


def _sd_cross(x, y):
    return np.minimum(_sd_box(x, y, 0.95, 0.3), _sd_box(x, y, 0.3, 0.95))


def _sd_star(x, y):
    return _sd_polygon(x, y, _STAR)


def _sd_ring(x, y):
    return np.abs(_length(x, y) - 0.68) - 0.25


def _sd_crescent(x, y):
    x = x + 0.15
    outer = _length(x, y) - 0.95
    inner = _length(x - 0.50, y) - 0.80
    return np.maximum(outer, -inner)


def _sd_l_shape(x, y):
    return np.minimum(_sd_box(x, y, 0.26, 0.92, cx=-0.44, cy=0.0),
                      _sd_box(x, y, 0.70, 0.26, cx=0.0, cy=-0.66))


def _sd_ellipse(x, y):
    a, b = 1.0, 0.45
    k0 = _length(x / a, y / b)
    k1 = _length(x / (a * a), y / (b * b))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _sd_half_disc(x, y):
    y = y + 0.45
    return np.maximum(_length(x, y) - 1.0, -y)


def _sd_t_shape(x, y):
    return np.minimum(_sd_box(x, y, 0.85, 0.25, cx=0.0, cy=0.62),
                      _sd_box(x, y, 0.25, 0.85, cx=0.0, cy=-0.12))


def _sd_heart(x, y):
    # Inigo Quilez' exact heart SDF, (re-derived and) rescaled to ~unit radius.
    s = 0.58
    x = np.abs(x) * s
    y = (y + 0.95) * s
    top = _length(x - 0.25, y - 0.75) - np.sqrt(2.0) / 4.0
    m = 0.5 * np.maximum(x + y, 0.0)
    low = np.sqrt(np.minimum(x * x + (y - 1.0) ** 2, (x - m) ** 2 + (y - m) ** 2))
    low = low * np.sign(x - y)
    return np.where(x + y > 1.0, top, low) / s


_SDFS = (
    _sd_circle, _sd_square, _sd_triangle, _sd_cross, _sd_star, _sd_ring,
    _sd_crescent, _sd_l_shape, _sd_ellipse, _sd_half_disc, _sd_t_shape, _sd_heart,
)
assert len(_SDFS) == len(SHAPE_CLASSES)


def _shape_stats(res: int = 401):
    """Area and max radius of every canonical shape (numerically, once at import)."""
    g = np.linspace(-1.6, 1.6, res, dtype=np.float32)
    x, y = np.meshgrid(g, g)
    cell = float(g[1] - g[0]) ** 2
    r = np.sqrt(x * x + y * y)
    area, extent = [], []
    for f in _SDFS:
        inside = f(x, y) < 0
        area.append(inside.sum() * cell)
        extent.append(r[inside].max())
    return np.array(area), np.array(extent)


_AREA, _EXTENT0 = _shape_stats()     # canonical area and max radius of every class


# ----------------------------------------------------------------------------------
# Parameter sampling (per block, so results never depend on n).
# ----------------------------------------------------------------------------------
def _block_draw(seed: int, block: int, num_classes: int, image_size: int, with_noise: bool):
    rng = np.random.default_rng([int(seed), int(block)])
    labels = np.arange(_BLOCK) % num_classes
    labels = labels[rng.permutation(_BLOCK)]
    params = rng.random((_BLOCK, _N_PARAMS))
    noise = None
    if with_noise:
        noise = rng.standard_normal((_BLOCK, image_size, image_size, 3), dtype=np.float32)
    return labels, params, noise


def _colour(lum, chroma_u, sat_u):
    """RGB colours with exactly the given luminance and a random chroma."""
    v = 2.0 * chroma_u - 1.0
    v = v - (v @ _LUMA)[:, None]                # zero-luminance direction
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(v > 0, (1.0 - lum[:, None]) / v,
                        np.where(v < 0, -lum[:, None] / v, np.inf))
    tmax = np.minimum(room.min(axis=1), 1.0)
    return lum[:, None] + (sat_u * tmax)[:, None] * v


def _render(labels, p, noise, image_size, difficulty, num_classes):
    """Render one chunk; p: (b, _N_PARAMS) uniforms. Returns float32 (b, S, S, 3)."""
    b = len(labels)
    S = image_size
    d = float(difficulty)
    mix = min(d, 1.0)                            # colour randomness saturates at d = 1

    # --- geometry -----------------------------------------------------------------
    radius = S * RADIUS_FRAC * np.exp(d * np.log(SCALE_JITTER) * (2 * p[:, _P_SCALE] - 1))
    # Per-class size factor: AREA_NORM=1 gives every class the same area (at equal scale),
    # so the mean colour / amount of ink of an image says nothing about its class.
    size = np.exp(0.5 * AREA_NORM * (np.log(_AREA).mean() - np.log(_AREA)))
    ext = _EXTENT0 * size                            # class max radius after normalisation
    # The frame limits (size cap, translation room) come from the largest extent of the used
    # classes when CLASS_FREE_LAYOUT is on, so neither the amount of ink nor the spread of
    # positions says which class an image holds (a linear probe on pixels reads both).
    lim = np.full(b, ext[:num_classes].max()) if CLASS_FREE_LAYOUT else ext[labels]
    radius = np.minimum(radius, 0.48 * S / lim)          # never larger than the frame
    extent = radius * lim                                # room is kept for this extent
    radius = radius * size[labels]                       # unit shape -> pixels
    theta = d * ROTATION_RANGE * (2 * p[:, _P_ROT] - 1)
    room = np.maximum(S / 2.0 - extent - 0.5, 0.0)
    shift = min(d * TRANSLATE_FRAC, 1.0) * room
    if WRAP_TRANSLATION:  # anywhere on a torus: every pixel is equally likely covered, whatever the class
        cx = S * p[:, _P_TX] * min(d, 1.0) + S / 2.0 * (1 - min(d, 1.0))
        cy = S * p[:, _P_TY] * min(d, 1.0) + S / 2.0 * (1 - min(d, 1.0))
    else:
        cx = S / 2.0 + shift * (2 * p[:, _P_TX] - 1)
        cy = S / 2.0 + shift * (2 * p[:, _P_TY] - 1)

    coords = np.arange(S, dtype=np.float32) + 0.5
    px = coords[None, None, :] - cx[:, None, None].astype(np.float32)     # (b, 1, S)
    py = cy[:, None, None].astype(np.float32) - coords[None, :, None]     # (b, S, 1), y up
    if WRAP_TRANSLATION:  # the shortest offset on the torus (shapes stay smaller than half the frame)
        px = (px + S / 2.0) % S - S / 2.0
        py = (py + S / 2.0) % S - S / 2.0
    c = np.cos(theta).astype(np.float32)[:, None, None]
    s = np.sin(theta).astype(np.float32)[:, None, None]
    inv_r = (1.0 / radius).astype(np.float32)[:, None, None]
    lx = (c * px + s * py) * inv_r                                        # (b, S, S)
    ly = (-s * px + c * py) * inv_r

    sd = np.empty((b, S, S), dtype=np.float32)
    for k in np.unique(labels):
        idx = np.nonzero(labels == k)[0]
        sd[idx] = _SDFS[k](lx[idx], ly[idx])
    sd *= radius.astype(np.float32)[:, None, None]                        # -> pixels
    alpha = np.clip(0.5 - sd / EDGE_SOFTNESS, 0.0, 1.0)[..., None]

    # --- colours ------------------------------------------------------------------
    contrast = (1 - mix) * (_EASY_FG_LUM - _EASY_BG_LUM) + mix * (
        MIN_CONTRAST + (MAX_CONTRAST - MIN_CONTRAST) * p[:, _P_CONTRAST])
    lo = (1 - mix) * _EASY_BG_LUM + mix * p[:, _P_LO] * (1.0 - contrast)
    hi = lo + contrast
    fg_lighter = p[:, _P_POL] < 1.0 - mix * (1.0 - FG_LIGHTER_PROB)
    fg_lum = np.where(fg_lighter, hi, lo)
    bg_lum = np.where(fg_lighter, lo, hi)
    fg = _colour(fg_lum, p[:, _P_FGCHROMA], mix * p[:, _P_FGSAT])
    bg = _colour(bg_lum, p[:, _P_BGCHROMA], mix * p[:, _P_BGSAT])

    # --- compose (in 0..255 units; +0.5 so the final cast to uint8 rounds) ----------
    if noise is not None:
        img = np.multiply(noise, np.float32(255.0 * NOISE_STD * d), out=noise)
        img += (255.0 * bg + 0.5).astype(np.float32)[:, None, None, :]
    else:
        img = np.empty((b, S, S, 3), dtype=np.float32)
        img[...] = (255.0 * bg + 0.5).astype(np.float32)[:, None, None, :]
    amp = 255.0 * TEXTURE_AMP * d
    if amp > 0:                                   # mild low-frequency background texture
        u = coords / np.float32(S)                                        # [0, 1]
        not_fg = 1.0 - alpha[..., 0]
        for w in range(min(TEXTURE_WAVES, _MAX_WAVES)):
            q = p[:, _P_TEX + 6 * w: _P_TEX + 6 * (w + 1)]
            fx = (2 * np.pi * TEXTURE_MAX_FREQ * (2 * q[:, 0] - 1)).astype(np.float32)
            fy = (2 * np.pi * TEXTURE_MAX_FREQ * (2 * q[:, 1] - 1)).astype(np.float32)
            ph = (2 * np.pi * q[:, 2]).astype(np.float32)[:, None, None]
            wave = np.sin(fx[:, None, None] * u[None, None, :]
                          + fy[:, None, None] * u[None, :, None] + ph)
            wave *= not_fg
            cw = (amp * (2 * q[:, 3:6] - 1)).astype(np.float32)[:, None, None, :]
            img += wave[..., None] * cw
    img += alpha * (255.0 * (fg - bg)).astype(np.float32)[:, None, None, :]
    return img


def make_shapes(n: int, image_size: int, seed: int, num_classes: int = 10,
                difficulty: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Generate the shapes dataset.

    Returns ``(images, labels)``: images uint8 ``(n, image_size, image_size, 3)`` and
    labels int64 ``(n,)`` in ``[0, num_classes)`` (names: ``SHAPE_CLASSES[:num_classes]``).
    Deterministic in ``(n, image_size, seed, num_classes, difficulty)``; sample ``i`` does
    not depend on ``n``.  Labels are balanced within every block of 64 samples.
    """
    n = int(n)
    image_size = int(image_size)
    if n < 0:
        raise ValueError("n must be >= 0")
    if image_size < 4:
        raise ValueError("image_size must be >= 4")
    if not 2 <= num_classes <= len(SHAPE_CLASSES):
        raise ValueError(f"num_classes must be in [2, {len(SHAPE_CLASSES)}]")
    if difficulty < 0:
        raise ValueError("difficulty must be >= 0")

    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    labels = np.empty((n,), dtype=np.int64)
    with_noise = NOISE_STD * difficulty > 0
    blocks_per_chunk = max(1, _CHUNK_PIXELS // (_BLOCK * image_size * image_size))
    n_blocks = -(-n // _BLOCK)
    for b0 in range(0, n_blocks, blocks_per_chunk):
        bs = range(b0, min(b0 + blocks_per_chunk, n_blocks))
        draws = [_block_draw(seed, blk, num_classes, image_size, with_noise) for blk in bs]
        lab = np.concatenate([dr[0] for dr in draws])
        par = np.concatenate([dr[1] for dr in draws])
        noi = np.concatenate([dr[2] for dr in draws]) if with_noise else None
        start = b0 * _BLOCK
        m = min(len(lab), n - start)
        lab, par = lab[:m], par[:m]
        noi = noi[:m] if noi is not None else None
        img = _render(lab, par, noi, image_size, difficulty, num_classes)
        np.clip(img, 0.0, 255.0, out=img)
        images[start:start + m] = img                # unsafe cast truncates (+0.5 added)
        labels[start:start + m] = lab
    return images, labels
