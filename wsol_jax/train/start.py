"""Where g starts: the value of the untrained map (`g.initial_weight`, raised by `g.start_agreement`).

g's last layer starts as a constant map `w` (its bias; 0.5 in the released code, where f is an
ImageNet classifier that still answers on `I * 0.5`). Eq. 1 teaches g only where f's answer on
`I * w` still depends on the image: where f answers on every dimmed image as it would on a blank
(an f that never saw dimmed images, e.g. a black box brought to `fit_weight_map`), D is flat around
the start, the gradient is the L1 term's alone, and the map fades to nothing before f's answer can
tell object from background. `start_weight` measures this with f's own answers, no label: the
smallest candidate at or above `g.initial_weight` at which f's answers on the dimmed training images
agree with its answers on the images for at least `g.start_agreement` of them.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from wsol_jax import losses
from wsol_jax.data.dataset import IMAGENET_MEAN, IMAGENET_STD, center_crop

CANDIDATES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # the start's grid; 0.95 keeps the sigmoid off its flat end
NUM_IMAGES = 128  # training images the agreement is measured on


def agreement(out_image: np.ndarray, out_masked: np.ndarray, embedding: bool) -> float:
    """How often f answers on the dimmed image as on the image, for `(N, D)` outputs.

    Classifier logits: the fraction with the same top class. Embeddings (an encoder, the Siamese
    f), which have no top class: the fraction whose dimmed output is nearer (by cosine) to its own
    image's output than (or as near as) the median pair of distinct images of the batch are to each other, i.e.
    dimming moves f's answer less than telling one image from another does (needs N >= 2)."""
    out_image, out_masked = np.asarray(out_image, np.float64), np.asarray(out_masked, np.float64)
    if out_image.shape != out_masked.shape or out_image.ndim != 2:
        raise ValueError(f'outputs must be two (N, D) arrays of one shape, got {out_image.shape}, {out_masked.shape}')
    if not embedding:
        return float(np.mean(np.argmax(out_image, -1) == np.argmax(out_masked, -1)))
    unit = lambda x: x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + 1e-12)
    if len(out_image) < 2:
        raise ValueError('the agreement of embeddings needs at least two images')
    own = np.sum(unit(out_masked) * unit(out_image), axis=-1)  # (N,) cosine of each to its own image
    pairs = unit(out_image) @ unit(out_image).T
    between = np.median(pairs[~np.eye(len(pairs), dtype=bool)])
    return float(np.mean(own >= between))


def start_weight(
    f_apply: Callable,
    images_uint8: np.ndarray,
    crop_size: int,
    floor: float,
    min_agreement: float,
    embedding: bool,
    mask_space: str,
    batch_size: int = 64,
) -> tuple[float, dict[float, float]]:
    """The untrained map's value for this f. `f_apply(normalised images (B, c, c, 3)) -> (B, D)`;
    `images_uint8` `(N, S, S, 3)` training images (the first `NUM_IMAGES` are used, centre-cropped
    to `crop_size`). `min_agreement` 0: `floor` as it is (the paper). Otherwise the smallest of
    `CANDIDATES` (and `floor`) at or above `floor` whose `agreement` reaches `min_agreement`; if
    none does, the one where f agrees most. Returns `(weight, {candidate: agreement})`."""
    if min_agreement <= 0:
        return floor, {}
    candidates = sorted({floor, *(c for c in CANDIDATES if c > floor)})
    images = np.asarray(images_uint8[:NUM_IMAGES])
    mean, std = jnp.asarray(IMAGENET_MEAN), jnp.asarray(IMAGENET_STD)

    @jax.jit
    def outputs(x_uint8, weight):
        x = center_crop(x_uint8, crop_size)  # normalised
        dimmed = losses.apply_weight_map(x, jnp.full(x.shape[:3], weight, x.dtype), mask_space, mean, std)
        return f_apply(x), f_apply(dimmed)

    measured = {}
    for weight in candidates:
        pairs = [outputs(images[i : i + batch_size], weight) for i in range(0, len(images), batch_size)]
        out_image = np.concatenate([np.asarray(a, np.float32) for a, _ in pairs])
        out_masked = np.concatenate([np.asarray(b, np.float32) for _, b in pairs])
        measured[weight] = agreement(out_image, out_masked, embedding)
        if measured[weight] >= min_agreement:
            return weight, measured
    best = max(measured.values())
    return min(w for w, a in measured.items() if a == best), measured
