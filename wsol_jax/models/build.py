"""f and g from a config: the one place that turns `config.f` / `config.g` / `config.dtype` into
networks, shared by training, the localiser and predict (none of which needs training code)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from wsol_jax.models.classifier import Classifier
from wsol_jax.models.weight_map import WeightMapNet

DTYPES = ('float32', 'bfloat16', 'float64')  # float64: JAX's 64-bit mode for the run (numerical checks)


def compute_dtype(name: str):
    """`config.dtype` as a dtype. 'float64' needs JAX's 64-bit mode (`run.run` turns it on for
    such a run; without it JAX would silently compute in float32)."""
    if name not in DTYPES:
        raise ValueError(f'config.dtype must be one of {DTYPES}, got {name!r}')
    if name == 'float64' and not jax.config.jax_enable_x64:
        raise ValueError("config.dtype='float64' needs JAX's 64-bit mode: run inside `with jax.enable_x64(True):`")
    return jnp.dtype(name)


def build_classifier(config, num_outputs: int, kind: str = 'classifier') -> Classifier:
    """`f` with a head of `num_outputs` (the classes; Method II's embedding), or an encoder
    (`kind='encoder'`, `num_outputs` 0: its pooled features)."""
    return Classifier(num_outputs, config.f.arch, config.f.width, compute_dtype(config.dtype), kind)


def build_weight_map_net(config, initial_weight: float | None = None) -> WeightMapNet:
    """g; `initial_weight`: the untrained map's value (default `config.g.initial_weight`; an
    export's spec has none: it only sets initial values, which loaded weights replace)."""
    return WeightMapNet(
        config.g.depth,
        config.g.width,
        tuple(config.g.decoder_channels),
        compute_dtype(config.dtype),
        config.g.decoder,
        config.g.get('initial_weight', 0.5) if initial_weight is None else initial_weight,
    )
