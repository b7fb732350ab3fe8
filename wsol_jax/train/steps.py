"""Compiled steps: pure functions `(state, [frozen f], batch, rng) -> (new_state, metrics)`.

Batches hold uint8 images at cache resolution; cropping, flipping and normalisation happen here,
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
from wsol_jax.data.dataset import IMAGENET_MEAN, IMAGENET_STD, augment
from wsol_jax.train.state import TrainState

G_METHODS = ('method1', 'method2')


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


def f_classifier_step(model, crop_size: int, state: TrainState, batch, rng):
    """Pre-training of `f` for Method I: cross-entropy on image labels."""
    images = augment(batch['image'], rng, crop_size)

    def loss_fn(params):
        logits, updates = model.apply({'params': params, 'batch_stats': state.batch_stats}, images,
                                      train=True, mutable=['batch_stats'])
        loss, parts = losses.classification_loss(logits, batch['label'])
        return loss, (parts, updates['batch_stats'])

    return _apply_update(state, loss_fn)


def f_triplet_step(model, crop_size: int, margin: float, state: TrainState, batch, rng):
    """Pre-training of the Siamese `f` for Method II with the triplet loss (Eq. 2)."""
    images = augment(_flatten(batch['image']), rng, crop_size)   # (3B, c, c, 3)

    def loss_fn(params):
        emb, updates = model.apply({'params': params, 'batch_stats': state.batch_stats}, images,
                                   train=True, mutable=['batch_stats'])
        emb = _unflatten(emb, 3)
        loss = losses.triplet_loss(emb[:, 0], emb[:, 1], emb[:, 2], margin)
        return loss, ({'triplet': loss}, updates['batch_stats'])

    return _apply_update(state, loss_fn)


def g_loss(g_model, f_model, g_cfg, crop_size: int, method: str, params, batch_stats, f_vars,
           images_uint8, rng):
    """The objective of `g` (Eq. 1, or Eq. 3 + 4), `f` frozen: its variables pass through
    `stop_gradient` and its BatchNorm uses running statistics.

    Returns `(total, (parts, new_batch_stats_of_g))`.
    """
    f_vars = jax.lax.stop_gradient(f_vars)
    f_apply = lambda x: f_model.apply(f_vars, x, train=False)
    mean, std = jnp.asarray(IMAGENET_MEAN), jnp.asarray(IMAGENET_STD)
    mask = functools.partial(losses.apply_weight_map, mask_space=g_cfg.mask_space, mean=mean, std=std)

    def g_apply(x):
        out, updates = g_model.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                                     mutable=['batch_stats'])
        return out, updates['batch_stats']

    if method == 'method1':
        images = augment(images_uint8, rng, crop_size)
        weight_map, new_batch_stats = g_apply(images)
        logits_image = jax.lax.stop_gradient(f_apply(images))
        logits_masked = f_apply(mask(images, weight_map))
        loss, parts = losses.method1_loss(logits_image, logits_masked, weight_map, g_cfg.reg_weight)
    elif method == 'method2':
        images = augment(_flatten(images_uint8), rng, crop_size)    # (3B, c, c, 3): a, p, n
        flat_maps, new_batch_stats = g_apply(images)
        maps, images = _unflatten(flat_maps, 3), _unflatten(images, 3)
        masked = jnp.stack([mask(images[:, 0], maps[:, 0]), mask(images[:, 1], maps[:, 1]),
                            mask(images[:, 2], maps[:, 2]),
                            mask(images[:, 0], 1.0 - maps[:, 0])], axis=1)  # J^f_a, J^f_p, J^f_n, J^b_a
        emb_image = jax.lax.stop_gradient(f_apply(images[:, 0]))
        emb = _unflatten(f_apply(_flatten(masked)), 4)
        loss, parts = losses.method2_loss(
            {'I_a': emb_image, 'Jf_a': emb[:, 0], 'Jf_p': emb[:, 1], 'Jf_n': emb[:, 2], 'Jb_a': emb[:, 3]},
            maps[:, 0], g_cfg.reg_weight, g_cfg.inner_weight, g_cfg.outer_weight, g_cfg.margin)
    else:
        raise ValueError(f'method must be one of {G_METHODS}, got {method!r}')
    return loss, (parts, new_batch_stats)


def g_step(g_model, f_model, g_cfg, crop_size: int, method: str, state: TrainState, f_vars, batch, rng):
    """One step of `g`; gradients reach only `g`'s parameters."""
    loss_fn = functools.partial(g_loss, g_model, f_model, g_cfg, crop_size, method)
    return _apply_update(state, lambda p: loss_fn(p, state.batch_stats, f_vars, batch['image'], rng))


def compile_step(fn: Callable, mesh, n_frozen: int = 0, donate_state: bool = True):
    """`jax.jit` a train step `(state, *frozen, batch, rng)` with the state (and frozen
    variables) replicated and the batch sharded along `'data'`."""
    rep, shard = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)
    return jax.jit(fn, in_shardings=(rep,) + (rep,) * n_frozen + (shard, rep), out_shardings=(rep, rep),
                   donate_argnums=(0,) if donate_state else ())

