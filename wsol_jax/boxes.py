"""From weight maps to boxes, and the early-stopping score (Section 3, Eq. 5 and Eq. 6).

Conventions: maps are `(N, H, W)` floats; boxes are `(N, 4)` integer `[x0, y0, x1, y1]` =
`[x, y, x + w, y + h]` of OpenCV's bounding rectangle (the clovaai/wsolevaluation convention),
so a box covers the pixels `x0 <= x < x1`, `y0 <= y < y1`.

The box rule (`box_rule`), one switch shared by the selection, the evaluation and predictions:
  * `'normalized'` (default): each map is min-max rescaled to [0, 1] before the `0.1 * max`
    threshold of the paper's text, as the first author's released `generate_bbox` and
    clovaai/wsolevaluation's `normalize_scoremap` rescale. An unsharp map whose values never
    drop far below its maximum (background 0.3, object 0.9) still gives the object's box.
  * `'literal'`: Eq. 5 on the sigmoid map as it is. Such a map then keeps every pixel, its box is
    the whole image and S (Eq. 6) is trivially 1.
  * `'released'`: the released `generate_bbox` (what-is-where-by-looking @ f237ab4, utils.py) to
    the last bit: the min-max normalised map is coloured with matplotlib's cubehelix (256
    levels), turned to a uint8 image and to grey by OpenCV (RGB2GRAY), and grey levels strictly
    above `int(ratio * max grey)` are kept (THRESH_TOZERO). `M_hat` is that thresholded grey
    image (its `thr_gray_heatmap`), so S (Eq. 6) is the released `energy`. The colours quantise:
    at ratio 0.1 it keeps normalised values from about 26/256 rather than from 0.1. A flat map
    (no maximum to normalise by) keeps nothing and its box is `[0, 0, 1, 1]`, as released.
"""

from __future__ import annotations

import functools

import cv2
import jax
import jax.numpy as jnp
import numpy as np

EMPTY_BOX = (0, 0, 0, 0)
RELEASED_EMPTY_BOX = (0, 0, 1, 1)  # generate_bbox's box when no contour is found
BOX_RULES = ('normalized', 'literal', 'released')
# How each rule makes `M_hat`, for the reports (results.md, the exported localiser's manifest).
BOX_RULE_DESCRIPTIONS = {
    'normalized': 'the map min-max normalised per image, values >= ratio x max kept (Eq. 5)',
    'literal': 'the raw sigmoid map, values >= ratio x max kept (Eq. 5 as written)',
    'released': (
        "the released generate_bbox: the min-max normalised map coloured with matplotlib's cubehelix "
        '(256 levels, uint8), OpenCV RGB2GRAY, grey levels > int(ratio x max grey) kept (nothing kept: '
        'box [0, 0, 1, 1])'
    ),
}
RELEASED_COLORMAP = 'cubehelix'
COLORMAP_LEVELS = 256  # matplotlib's default colormap size, which generate_bbox uses
BAD_COLOUR = COLORMAP_LEVELS  # colour index of NaN: the colour of a flat map (0 / 0)


def _namespace(a):
    """jax.numpy for jax arrays (and tracers), numpy otherwise."""
    return jnp if isinstance(a, jax.Array) else np


def normalize_maps(maps, eps: float = 1e-8):
    """Per-map min-max normalisation to [0, 1], as wsolevaluation does to every score map
    before PxAP and MaxBoxAccV2 (`normalize_scoremap`). `(N, H, W)` -> `(N, H, W)`."""
    xp = _namespace(maps)
    lo = xp.min(maps, axis=(-2, -1), keepdims=True)
    hi = xp.max(maps, axis=(-2, -1), keepdims=True)
    return (maps - lo) / xp.maximum(hi - lo, eps)


def threshold_maps(maps, ratio: float = 0.1):
    """Eq. 5: per map, values below `tau = ratio * max(M)` are set to zero (`M_hat`).

    Works on numpy and jax arrays alike (jit-compatible); `(N, H, W)` -> `(N, H, W)`.
    """
    xp = _namespace(maps)
    tau = ratio * xp.max(maps, axis=(-2, -1), keepdims=True)
    return xp.where(maps >= tau, maps, xp.zeros_like(maps))


@functools.lru_cache(maxsize=None)
def released_grey_levels() -> np.ndarray:
    """`(257,)` uint8: the grey level of each colour that the released `generate_bbox` can draw.

    Entry `k < 256` is cubehelix colour `k` (the colour of normalised values in `[k/256, (k+1)/256)`,
    1.0 included in 255), entry 256 the colormap's bad colour (NaN). Each goes the released way:
    matplotlib RGBA -> RGB float32 * 255 -> uint8 (`intensity_to_rgb(...).astype('uint8')`) ->
    `cv2.cvtColor(RGB2GRAY)`. Made once from matplotlib, so that the device only looks it up.
    """
    import matplotlib

    cmap = matplotlib.colormaps[RELEASED_COLORMAP]
    if cmap.N != COLORMAP_LEVELS:
        raise RuntimeError(
            f'matplotlib {matplotlib.__version__} has {cmap.N} {RELEASED_COLORMAP} levels, '
            f'the released code assumed {COLORMAP_LEVELS}'
        )
    values = np.append((np.arange(COLORMAP_LEVELS) + 0.5) / COLORMAP_LEVELS, np.nan)
    rgb = (cmap(values)[:, :3].astype(np.float32) * 255.0).astype(np.uint8)
    return cv2.cvtColor(rgb[None], cv2.COLOR_RGB2GRAY)[0]


@functools.lru_cache(maxsize=None)
def released_grey_thresholds(ratio: float) -> np.ndarray:
    """`(256,)` int32: generate_bbox's threshold `int(ratio * max grey)` for each max grey level
    (float64 product, truncated), so that the device does not round `ratio` differently."""
    return np.array([int(ratio * g) for g in range(256)], np.int32)


def _two_sum(a, b):
    """Knuth's error-free sum: `s + e == a + b` exactly, `s = fl(a + b)` (any float dtype)."""
    s = a + b
    b_virtual = s - a
    return s, (a - (s - b_virtual)) + (b - b_virtual)


def _split_float32(x):
    """`x == hi + lo` exactly, each with at most 12 of float32's 24 significant bits (the low 12
    mantissa bits cleared by a mask, not by arithmetic that a compiler could contract), so that
    their products with an integer below 2^12 are exact."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    hi = jax.lax.bitcast_convert_type(bits & jnp.uint32(0xFFFFF000), jnp.float32)
    return hi, x - hi


def _colour_index_float64(maps, xp):
    """generate_bbox's arithmetic as written: float64 `(M - min) / max(M - min)`, matplotlib's
    index `int(256 v)` (v = 1 -> 255); NaN (a flat map, 0 / 0) -> the bad colour."""
    m = maps.astype(xp.float64)
    d = m - xp.min(m, axis=(-2, -1), keepdims=True)
    b = xp.max(d, axis=(-2, -1), keepdims=True)
    bad = ~(b > 0)
    x = d / xp.where(bad, 1.0, b) * COLORMAP_LEVELS
    k = xp.where(x == COLORMAP_LEVELS, COLORMAP_LEVELS - 1, xp.floor(x))
    return xp.where(bad, BAD_COLOUR, k).astype(xp.int32)


def _colour_index_float32(maps):
    """The same index from float32 arithmetic (the device without float64): exact where float64
    is.

    The index is the largest `k` with `256 (M - min) >= k (max - min)`. `M - min = d1 + d2` and
    `max - min = b1 + b2` are kept exactly (`_two_sum`), a float32 quotient proposes `k`, and the
    sign of the excess `256 (M - min) - k (max - min)` decides between `k - 1`, `k` and `k + 1`.
    Its large part `256 d1 - k b1` is computed exactly (`k b1` as two exact products; the
    difference of near-equal terms is exact, Sterbenz); only the tiny `256 d2 - k b2` is rounded.
    A naive float32 quotient errs by up to ~3e-5 of a colour step, which moves values such as
    `(0.5 - 0.1) / (0.9 - 0.1)` (4.7e-6 above the edge 128/256) to the neighbouring colour; this
    one errs only where `256 (M - min) / (max - min)` lies within ~1e-11 of an integer without being
    one (and the map's minimum is not 0), where float64 rounding itself decides.
    """
    m = jnp.asarray(maps, jnp.float32)
    lo = jnp.min(m, axis=(-2, -1), keepdims=True)
    hi = jnp.max(m, axis=(-2, -1), keepdims=True)
    d1, d2 = _two_sum(m, -lo)
    b1, b2 = _two_sum(hi, -lo)
    bad = ~(b1 > 0)
    b1 = jnp.where(bad, 1.0, b1)
    b_hi, b_lo = _split_float32(b1)
    levels = float(COLORMAP_LEVELS)

    def excess(k):  # 256 (M - min) - k (max - min), its sign exact up to the rounding of the tiny part
        return ((levels * d1 - k * b_hi) - k * b_lo) + (levels * d2 - k * b2)

    k = jnp.clip(jnp.floor(levels * d1 / b1), 0, levels)
    k = k - (excess(k) < 0) + (excess(k + 1) >= 0)
    return jnp.where(bad, BAD_COLOUR, jnp.minimum(k, levels - 1)).astype(jnp.int32)


def released_colour_index(maps):
    """`(N, H, W)` maps -> `(N, H, W)` int32: the cubehelix colour (0..255) that generate_bbox
    gives each pixel, 256 (bad) for every pixel of a flat map. numpy (float64, as released) or
    jax (float32 on the device; float64 arrays under x64 the released way)."""
    xp = _namespace(maps)
    if xp is np or maps.dtype == jnp.float64:
        return _colour_index_float64(maps, xp)
    return _colour_index_float32(maps)


def released_thresholded_maps(maps, ratio: float = 0.1):
    """generate_bbox's `thr_gray_heatmap`: `(N, H, W)` maps -> `(N, H, W)` float32 grey levels
    (integers 0..255), those not strictly above `int(ratio * max grey)` set to 0. numpy or jax;
    on the device two table look-ups (`released_grey_levels`, `released_grey_thresholds`)."""
    xp = _namespace(maps)
    grey = xp.asarray(released_grey_levels().astype(np.int32))[released_colour_index(maps)]
    tau = xp.asarray(released_grey_thresholds(ratio))[xp.max(grey, axis=(-2, -1), keepdims=True)]
    return xp.where(grey > tau, grey, 0).astype(xp.float32)


def thresholded_maps(maps, ratio: float = 0.1, box_rule: str = 'normalized'):
    """`M_hat` as the box rule sees it: Eq. 5 on the min-max normalised map (`'normalized'`), on
    the map as it is (`'literal'`), or the released grey image (`'released'`,
    `released_thresholded_maps`). `(N, H, W)` -> `(N, H, W)`, numpy or jax."""
    if box_rule == 'released':
        return released_thresholded_maps(maps, ratio)
    if box_rule == 'normalized':
        maps = normalize_maps(maps)
    elif box_rule != 'literal':
        raise ValueError(f'box_rule must be one of {BOX_RULES}, got {box_rule!r}')
    return threshold_maps(maps, ratio)


def empty_box(box_rule: str) -> tuple[int, int, int, int]:
    """The box of a map that keeps nothing: `[0, 0, 1, 1]` under the released rule (as
    generate_bbox returns it), `[0, 0, 0, 0]` otherwise."""
    return RELEASED_EMPTY_BOX if box_rule == 'released' else EMPTY_BOX


def _largest_contour_box(binary: np.ndarray, empty: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Bounding rectangle of the largest-area contour of a uint8 `(H, W)` mask (Suzuki [39]);
    `empty` when it has none."""
    contours, _ = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return empty
    x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
    return (x, y, x + w, y + h)


def boxes_from_thresholded(maps_hat, box_rule: str = 'normalized') -> np.ndarray:
    """Largest contour of the kept pixels (`M_hat > 0`): `(N, H, W)` -> `(N, 4)` int32 boxes.

    OpenCV's `findContours` (RETR_TREE, CHAIN_APPROX_SIMPLE) proposes contours, the one with the
    largest `contourArea` wins, and its bounding rectangle is returned. A map with no kept pixel
    gives `empty_box(box_rule)`.
    """
    maps_hat = np.asarray(maps_hat, dtype=np.float32)
    if maps_hat.ndim != 3:
        raise ValueError(f'boxes expect (N, H, W) maps, got shape {maps_hat.shape}')
    kept = maps_hat > 0
    empty = empty_box(box_rule)
    return np.array([_largest_contour_box(k.astype(np.uint8), empty) for k in kept], dtype=np.int32).reshape(-1, 4)


def boxes_from_maps(maps, ratio: float = 0.1, box_rule: str = 'normalized') -> np.ndarray:
    """The paper's box: Eq. 5 under `box_rule`, then the largest contour's bounding rectangle.
    `(N, H, W)` maps -> `(N, 4)` int32 boxes `[x0, y0, x1, y1]`."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f'boxes_from_maps expects (N, H, W) maps, got shape {maps.shape}')
    return boxes_from_thresholded(thresholded_maps(maps, ratio, box_rule), box_rule)


def containment_score(thresholded_maps: jnp.ndarray, boxes: jnp.ndarray) -> jnp.ndarray:
    """Eq. 6: the share of each thresholded map's mass inside its box; `(N,)` in [0, 1].

    Args:
      thresholded_maps: `(N, H, W)` `M_hat` (the output of `thresholded_maps`).
      boxes: `(N, 4)` `[x0, y0, x1, y1]`; pixels `x0 <= x < x1`, `y0 <= y < y1` count as inside.
    A map with no mass scores 0. Vectorised and jit-compatible: it runs on the device.
    """
    maps = jnp.asarray(thresholded_maps, jnp.float32)
    boxes = jnp.asarray(boxes)
    height, width = maps.shape[-2:]
    ys = jnp.arange(height)[None, :, None]
    xs = jnp.arange(width)[None, None, :]
    x0, y0, x1, y1 = (boxes[:, i, None, None] for i in range(4))
    inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    total = jnp.sum(maps, axis=(1, 2))
    kept = jnp.sum(jnp.where(inside, maps, 0.0), axis=(1, 2))
    return jnp.where(total > 0, kept / jnp.where(total > 0, total, 1.0), 0.0)


def kept_fraction(thresholded_maps: jnp.ndarray) -> jnp.ndarray:
    """`(N,)` share of the pixels that `M_hat` keeps (non-zero); jit-compatible."""
    return jnp.mean(jnp.asarray(thresholded_maps) > 0, axis=(1, 2))


def box_fraction(boxes: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
    """`(N,)` share of the image that each `(N, 4)` box `[x0, y0, x1, y1)` covers."""
    boxes = jnp.asarray(boxes, jnp.float32)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (height * width)


def selection_scores(
    thresholded_maps: jnp.ndarray, boxes: jnp.ndarray, max_coverage: float = 0.95
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Per-image S for the early stopping, and which maps are degenerate; `(N,)`, `(N,)` bool.

    Eq. 6 asks whether the single box "still contains most of the weights of the mask": it
    measures the mass left outside the box. When the box is (nearly) the whole image there is
    no outside, and S is 1 whatever the map: an unsharp early map whose kept region reaches
    every border (object bright, background above the threshold) wins the selection by that
    tie although nothing is localised. Maps whose box covers more than `max_coverage` of the
    image, and maps that keep nothing, are degenerate and score 0 here; `max_coverage=1`
    switches it off. (The box contains every kept pixel of its contour, so this also catches a
    map that keeps nearly every pixel.)
    """
    s = containment_score(thresholded_maps, boxes)
    height, width = thresholded_maps.shape[-2:]
    degenerate = (box_fraction(boxes, height, width) > max_coverage) | (kept_fraction(thresholded_maps) == 0)
    return jnp.where(degenerate, 0.0, s), degenerate
