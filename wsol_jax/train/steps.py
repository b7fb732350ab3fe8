"""Compiled steps: pure functions `(state, [frozen f], batch, rng) -> (new_state, metrics)`.

Batches hold uint8 images at cache resolution; the training transform (`crop`: a
`dataset.Augment`, or a crop size for the paper's crop and flip) and normalisation happen here,
on the device. Triplet batches stack (anchor, positive, negative) on axis 1, `(B, 3, S, S, 3)`,
so that the batch axis stays the sharded one. Every step is `jax.jit`-ed over the mesh with the
batch sharded on `'data'` and the state replicated (`wsol_jax.parallel`).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from wsol_jax import losses, parallel
from wsol_jax.data.dataset import IMAGENET_MEAN, IMAGENET_STD, Augment, random_erase
from wsol_jax.train.state import TrainState


def _flatten(x):
    """`(B, K, ...)` -> `(B*K, ...)`: rows of one example stay on the device that holds it."""
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def _unflatten(y, k: int):
    """`(B*K, ...)` -> `(B, K, ...)`."""
    return y.reshape((y.shape[0] // k, k) + y.shape[1:])


def _apply_update(state: TrainState, loss_fn, *args):
    (loss, (parts, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, *args)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    return new_state, dict(parts, loss=loss)


def _f_inputs(images_uint8, rng, crop: Augment | int, erase_prob: float, erase_fill: str = 'mean'):
    k_aug, k_erase = jax.random.split(rng)
    images = Augment.of(crop)(images_uint8, k_aug)
    return random_erase(images, k_erase, erase_prob, fill=erase_fill) if erase_prob > 0 else images


def blank_images(images: jnp.ndarray, mask_space: str, n: int = 1) -> jnp.ndarray:
    """`n` copies of what `g`'s all-zero map makes of an image `(n, H, W, 3)`, in `mask_space`."""
    zeros = jnp.zeros((n,) + images.shape[1:3], images.dtype)
    return losses.apply_weight_map(images[:n], zeros, mask_space, jnp.asarray(IMAGENET_MEAN), jnp.asarray(IMAGENET_STD))


def f_classifier_step(
    model,
    crop: Augment | int,
    state: TrainState,
    batch,
    rng,
    erase_prob: float = 0.0,
    blank_weight: float = 0.0,
    mask_space: str = 'normalized',
    label_smoothing: float = 0.0,
    erase_fill: str = 'mean',
):
    """Pre-training of `f` for Method I: cross-entropy on image labels (smoothed by
    `label_smoothing`; 0: the paper), plus `blank_weight` times `losses.blank_loss` on one blank
    image appended to the batch (0: off, the paper)."""
    images = _f_inputs(batch['image'], rng, crop, erase_prob, erase_fill)
    n = images.shape[0]
    if blank_weight > 0:
        # In the same forward pass, so that BatchNorm sees it among real images, as f later sees
        # masked images with its running statistics.
        images = jnp.concatenate([images, blank_images(images, mask_space)])

    def loss_fn(params):
        logits, updates = model.apply(
            {'params': params, 'batch_stats': state.batch_stats}, images, train=True, mutable=['batch_stats']
        )
        loss, parts = losses.classification_loss(logits[:n], batch['label'], label_smoothing)
        if blank_weight > 0:
            parts['blank'] = losses.blank_loss(logits[n:])
            loss = loss + blank_weight * parts['blank']
        return loss, (parts, updates['batch_stats'])

    return _apply_update(state, loss_fn)


def f_triplet_step(
    model,
    crop: Augment | int,
    margin: float,
    state: TrainState,
    batch,
    rng,
    erase_prob: float = 0.0,
    blank_weight: float = 0.0,
    mask_space: str = 'normalized',
    erase_fill: str = 'mean',
):
    """Pre-training of the Siamese `f` for Method II with the triplet loss (Eq. 2), plus
    `blank_weight` times Eq. 2 with the blank image as every anchor's negative (0: off, the
    paper): the embedding's counterpart of `losses.blank_loss`, a blank is of no class."""
    images = _f_inputs(_flatten(batch['image']), rng, crop, erase_prob, erase_fill)  # (3B, c, c, 3)
    n = images.shape[0]
    if blank_weight > 0:
        images = jnp.concatenate([images, blank_images(images, mask_space)])

    def loss_fn(params):
        emb, updates = model.apply(
            {'params': params, 'batch_stats': state.batch_stats}, images, train=True, mutable=['batch_stats']
        )
        triplets = _unflatten(emb[:n], 3)
        loss = losses.triplet_loss(triplets[:, 0], triplets[:, 1], triplets[:, 2], margin)
        parts = {'triplet': loss}
        if blank_weight > 0:
            blank = jnp.broadcast_to(emb[n:], triplets[:, 0].shape)
            parts['blank'] = losses.triplet_loss(triplets[:, 0], triplets[:, 1], blank, margin)
            loss = loss + blank_weight * parts['blank']
        return loss, (parts, updates['batch_stats'])

    return _apply_update(state, loss_fn)


def _g_forward(g_model, params, batch_stats, x):
    out, updates = g_model.apply({'params': params, 'batch_stats': batch_stats}, x, train=True, mutable=['batch_stats'])
    return out, updates['batch_stats']


def embedding_objective(g_apply, f_apply, mask, g_cfg, crop: Augment | int, images_uint8, rng):
    """Method I for an encoder f (`f.kind='encoder'`: pooled features, no class head): Eq. 1 with D
    the cosine distance between `f(I)` and `f(I * g(I))`, plus `lambda R(g(I))`. Returns `(loss,
    parts, new batch stats of g)`."""
    images = Augment.of(crop)(images_uint8, rng)
    weight_map, new_batch_stats = g_apply(images)
    emb_image = jax.lax.stop_gradient(f_apply(images))
    emb_masked = f_apply(mask(images, weight_map))
    loss, parts = losses.embedding_loss(emb_image, emb_masked, weight_map, g_cfg.reg_weight)
    return loss, parts, new_batch_stats


def method1_objective(g_apply, f_apply, mask, g_cfg, crop: Augment | int, images_uint8, rng):
    """Method I (Eq. 1): `f(I)` and `f(I * g(I))` agree, plus `lambda R(g(I))`.
    `images_uint8` `(B, S, S, 3)`. Returns `(loss, parts, new batch stats of g)`."""
    images = Augment.of(crop)(images_uint8, rng)
    weight_map, new_batch_stats = g_apply(images)
    logits_image = jax.lax.stop_gradient(f_apply(images))
    logits_masked = f_apply(mask(images, weight_map))
    loss, parts = losses.method1_loss(logits_image, logits_masked, weight_map, g_cfg.reg_weight)
    return loss, parts, new_batch_stats


def method2_objective(g_apply, f_apply, mask, g_cfg, crop: Augment | int, images_uint8, rng):
    """Method II (Eq. 3 + Eq. 4 + `lambda R(M_a)`) on triplets `(B, 3, S, S, 3)` (anchor,
    positive, negative) and the Siamese `f`. Returns `(loss, parts, new batch stats of g)`."""
    images = Augment.of(crop)(_flatten(images_uint8), rng)  # (3B, c, c, 3): a, p, n
    flat_maps, new_batch_stats = g_apply(images)
    maps, images = _unflatten(flat_maps, 3), _unflatten(images, 3)
    masked = jnp.stack(
        [
            mask(images[:, 0], maps[:, 0]),
            mask(images[:, 1], maps[:, 1]),
            mask(images[:, 2], maps[:, 2]),
            mask(images[:, 0], 1.0 - maps[:, 0]),
        ],
        axis=1,
    )  # J^f_a, J^f_p, J^f_n, J^b_a
    emb_image = jax.lax.stop_gradient(f_apply(images[:, 0]))
    emb = _unflatten(f_apply(_flatten(masked)), 4)
    loss, parts = losses.method2_loss(
        {'I_a': emb_image, 'Jf_a': emb[:, 0], 'Jf_p': emb[:, 1], 'Jf_n': emb[:, 2], 'Jb_a': emb[:, 3]},
        maps[:, 0],
        g_cfg.reg_weight,
        g_cfg.inner_weight,
        g_cfg.outer_weight,
        g_cfg.margin,
    )
    return loss, parts, new_batch_stats


def frozen_apply(f_model, f_output: str = 'outputs') -> Callable:
    """`(f_vars, images) -> outputs` of a frozen f in evaluation mode (running BatchNorm statistics):
    its logits or embedding (`'outputs'`), or its pooled features as an encoder (`'features'`)."""
    if f_output == 'features':
        return lambda v, x: f_model.apply(v, x, method='embed')
    if f_output != 'outputs':
        raise ValueError(f"f_output must be 'outputs' or 'features', got {f_output!r}")
    return lambda v, x: f_model.apply(v, x, train=False)


def g_loss(
    f_apply, g_model, g_cfg, crop: Augment | int, objective: Callable, params, batch_stats, f_vars, images_uint8, rng
):
    """The objective of `g` (`method1_objective`, `embedding_objective` or `method2_objective`, as
    `wsol_jax.methods` names them) with `f` frozen: `f_apply(f_vars, images)` (`frozen_apply`, or
    any jit-traceable function of normalised images) sees its variables through `stop_gradient`.

    Returns `(total, (parts, new_batch_stats_of_g))`.
    """
    f_vars = jax.lax.stop_gradient(f_vars)
    f_apply_vars = functools.partial(f_apply, f_vars)
    mean, std = jnp.asarray(IMAGENET_MEAN), jnp.asarray(IMAGENET_STD)
    mask = functools.partial(losses.apply_weight_map, mask_space=g_cfg.mask_space, mean=mean, std=std)
    g_apply = functools.partial(_g_forward, g_model, params, batch_stats)
    loss, parts, new_batch_stats = objective(g_apply, f_apply_vars, mask, g_cfg, crop, images_uint8, rng)
    return loss, (parts, new_batch_stats)


def g_step(f_apply, g_model, g_cfg, crop: Augment | int, objective: Callable, state: TrainState, f_vars, batch, rng):
    """One step of `g` (`f_apply` as in `g_loss`); gradients reach only `g`'s parameters."""
    loss_fn = functools.partial(g_loss, f_apply, g_model, g_cfg, crop, objective)
    new_state, metrics = _apply_update(state, lambda p: loss_fn(p, state.batch_stats, f_vars, batch['image'], rng))
    if state.average is not None:  # g.ema_decay > 0
        new_state = new_state.update_average(g_cfg.ema_decay)
    return new_state, metrics


def compile_step(fn: Callable, mesh, n_frozen: int = 0, donate_state: bool = True):
    """`jax.jit` a train step `(state, *frozen, batch, rng)` with the state (and frozen
    variables) replicated and the batch sharded along `'data'`."""
    rep, shard = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)
    return jax.jit(
        fn,
        in_shardings=(rep,) + (rep,) * n_frozen + (shard, rep),
        out_shardings=(rep, rep),
        donate_argnums=(0,) if donate_state else (),
    )
