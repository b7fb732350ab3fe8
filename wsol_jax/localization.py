"""From weight maps to boxes, and the early-stopping score (Section 3, Eq. 5 and Eq. 6).

Conventions: maps are `(N, H, W)` floats; boxes are `(N, 4)` integer `[x0, y0, x1, y1]` =
`[x, y, x + w, y + h]` of OpenCV's bounding rectangle (the clovaai/wsolevaluation convention),
so a box covers the pixels `x0 <= x < x1`, `y0 <= y < y1`.

The box rule (`box_rule`), one switch shared by the selection, the evaluation and predictions:
  * `'normalized'` (default): each map is min-max rescaled to [0, 1] before the `0.1 * max`
    threshold, as the first author's released `generate_bbox` (which produced the paper's
    tables) and clovaai/wsolevaluation's `normalize_scoremap` do. An unsharp map whose values
    never drop far below its maximum (background 0.3, object 0.9) still gives the object's box.
  * `'literal'`: Eq. 5 on the sigmoid map as it is. Such a map then keeps every pixel, its box is
    the whole image and S (Eq. 6) is trivially 1.
"""
from __future__ import annotations

import cv2
import jax
import jax.numpy as jnp
import numpy as np

EMPTY_BOX = (0, 0, 0, 0)
BOX_RULES = ('normalized', 'literal')


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


def thresholded_maps(maps, ratio: float = 0.1, box_rule: str = 'normalized'):
    """`M_hat` as the box rule sees it: Eq. 5 on the min-max normalised map (`'normalized'`)
    or on the map as it is (`'literal'`). `(N, H, W)` -> `(N, H, W)`, numpy or jax."""
    if box_rule == 'normalized':
        maps = normalize_maps(maps)
    elif box_rule != 'literal':
        raise ValueError(f'box_rule must be one of {BOX_RULES}, got {box_rule!r}')
    return threshold_maps(maps, ratio)


def _largest_contour_box(binary: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding rectangle of the largest-area contour of a uint8 `(H, W)` mask (Suzuki [39])."""
    contours, _ = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return EMPTY_BOX
    x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
    return (x, y, x + w, y + h)


def boxes_from_thresholded(maps_hat) -> np.ndarray:
    """Largest contour of the kept pixels (`M_hat > 0`): `(N, H, W)` -> `(N, 4)` int32 boxes.

    OpenCV's `findContours` (RETR_TREE, CHAIN_APPROX_SIMPLE) proposes contours, the one with the
    largest `contourArea` wins, and its bounding rectangle is returned. A map with no kept pixel
    gives `[0, 0, 0, 0]`.
    """
    maps_hat = np.asarray(maps_hat, dtype=np.float32)
    if maps_hat.ndim != 3:
        raise ValueError(f'boxes expect (N, H, W) maps, got shape {maps_hat.shape}')
    kept = maps_hat > 0
    return np.array([_largest_contour_box(k.astype(np.uint8)) for k in kept],
                    dtype=np.int32).reshape(-1, 4)


def boxes_from_maps(maps, ratio: float = 0.1, box_rule: str = 'normalized') -> np.ndarray:
    """The paper's box: Eq. 5 under `box_rule`, then the largest contour's bounding rectangle.
    `(N, H, W)` maps -> `(N, 4)` int32 boxes `[x0, y0, x1, y1]`."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f'boxes_from_maps expects (N, H, W) maps, got shape {maps.shape}')
    return boxes_from_thresholded(thresholded_maps(maps, ratio, box_rule))


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


def selection_scores(thresholded_maps: jnp.ndarray, boxes: jnp.ndarray,
                     max_coverage: float = 0.95) -> tuple[jnp.ndarray, jnp.ndarray]:
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
