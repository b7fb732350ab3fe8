"""The precision networks return: at least float32, whatever the compute dtype."""

import jax.numpy as jnp


def output_dtype(compute_dtype) -> jnp.dtype:
    """bfloat16 compute returns float32 maps, logits and statistics; float64 compute (the numerical
    checks) returns float64."""
    return jnp.promote_types(compute_dtype, jnp.float32)
