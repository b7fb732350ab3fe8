"""Inference with trained networks: weight maps (with the box rule's `M_hat`), f's outputs, CAMs.

Pure functions of `(variables, uint8 images)`; `compile_*` returns them jit-compiled. Used by the
per-epoch scoring of `g`, the evaluation and the reports; the device does the networks and Eq. 5-6,
the host only the OpenCV contours (`boxes.boxes_from_thresholded`).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from wsol_jax.boxes import containment_score, normalize_maps, selection_scores, thresholded_maps
from wsol_jax.data.dataset import IMAGENET_MEAN, IMAGENET_STD, center_crop, input_float, normalize
from wsol_jax.errors import ConfigError

F_INPUTS = ('normalized', 'pixels')  # what an f from research code takes: normalised images or 0-255 pixels


def weight_maps(g_model, crop_size: int, ratio: float, box_rule: str, g_vars, images_uint8):
    """Centre crop -> `M = g(I)` `(N, c, c)` in [0, 1], and `M_hat` `(N, c, c)` of the box rule
    (Eq. 5, on the min-max normalised map by default)."""
    maps = g_model.apply(g_vars, center_crop(images_uint8, crop_size), train=False)
    return maps, thresholded_maps(maps, ratio, box_rule)


def whole_image(images_uint8, size: int):
    """The whole image, not a centre crop, at the network's input size: `(N, S, S, 3)` uint8 ->
    `(N, size, size, 3)` normalised (bilinear, antialiased when shrinking). This is the view of
    predictions on new images and of wsolevaluation's protocol (resize, no crop)."""
    n, s = images_uint8.shape[0], images_uint8.shape[1]
    x = images_uint8.astype(input_float())
    if s != size or images_uint8.shape[2] != size:
        x = jnp.clip(jax.image.resize(x, (n, size, size, 3), 'bilinear', antialias=True), 0, 255)
    return normalize(x)


def localize_whole_images(g_model, classify, size: int, ratio: float, box_rule: str, g_vars, f_vars, images_uint8):
    """Everything a prediction needs, on the whole image: `M` `(N, c, c)`, `M_hat` `(N, c, c)`
    under the box rule, and the class probabilities `(N, C)` of `classify(f_vars, normalised
    images) -> logits` (`(N, 0)` without a classifier: `classify` None)."""
    x = whole_image(images_uint8, size)
    maps = g_model.apply(g_vars, x, train=False)
    logits = classify(f_vars, x) if classify is not None else jnp.zeros((x.shape[0], 0), jnp.float32)
    return maps, thresholded_maps(maps, ratio, box_rule), jax.nn.softmax(logits, axis=-1)


def f_outputs(f_model, crop_size: int, f_vars, images_uint8):
    """`f` on the centre crop: logits `(N, C)` of the classifier, or `(N, D)` embeddings."""
    return f_model.apply(f_vars, center_crop(images_uint8, crop_size), train=False)


def cam_maps(f_model, crop_size: int, f_vars, images_uint8, classes):
    """The CAM baseline: class activation maps of `classes`, bilinearly upsampled to the crop
    and min-max normalised per image, `(N, c, c)` in [0, 1]."""
    cams = f_model.apply(f_vars, center_crop(images_uint8, crop_size), classes, method=f_model.class_activation_maps)
    up = jax.image.resize(cams, (cams.shape[0], crop_size, crop_size), 'bilinear')
    return normalize_maps(jnp.maximum(up, 0.0))


def compile_weight_maps(g_model, crop_size: int, eval_cfg):
    """`(g_vars, images_uint8) -> (M, M_hat)`, compiled once."""
    return jax.jit(functools.partial(weight_maps, g_model, crop_size, eval_cfg.threshold_ratio, eval_cfg.box_rule))


def compile_f_outputs(f_model, crop_size: int):
    return jax.jit(functools.partial(f_outputs, f_model, crop_size))


def compile_cam_maps(f_model, crop_size: int):
    return jax.jit(functools.partial(cam_maps, f_model, crop_size))


@functools.partial(jax.jit, static_argnames='max_coverage')
def _scores(maps, maps_hat, boxes, max_coverage: float):
    s, degenerate = selection_scores(maps_hat, boxes, max_coverage)
    raw = containment_score(maps_hat, boxes)
    hi, lo = jnp.max(maps, axis=(1, 2)), jnp.min(maps, axis=(1, 2))
    # A collapsed map weights nothing (max < 0.1) or everything (min > 0.9).
    return s, raw, degenerate, (hi < 0.1) | (lo > 0.9)


def map_scores(maps, maps_hat, boxes: np.ndarray, max_coverage: float) -> dict[str, np.ndarray]:
    """Per image: `S` (Eq. 6, 0 for degenerate maps: what the selection averages), `S_raw`
    (Eq. 6 as written), `degenerate` and `collapsed` flags; `(N,)` numpy arrays."""
    out = _scores(maps, maps_hat, jnp.asarray(boxes), max_coverage)
    return dict(zip(('S', 'S_raw', 'degenerate', 'collapsed'), (np.asarray(x) for x in out)))


def f_of_normalized(f_apply: Callable, f_input: str) -> Callable:
    """`(unused variables, normalised images) -> f_apply(images in f's input space)`."""
    if f_input not in F_INPUTS:
        raise ConfigError(f'f_input must be one of {F_INPUTS}, got {f_input!r}')
    if f_input == 'normalized':
        return lambda _, x: f_apply(x)
    mean, std = jnp.asarray(IMAGENET_MEAN), jnp.asarray(IMAGENET_STD)
    return lambda _, x: f_apply((x * std + mean) * 255.0)  # floats, so that gradients reach g through f
