"""BatchNorm with PyTorch's running statistics, for every BatchNorm of `f` and `g`.

Why not `flax.linen.BatchNorm`: in train mode both normalise with the biased batch variance
(divided by n), but PyTorch's `BatchNorm2d` adds the *unbiased* variance (divided by n - 1) to
its running average, and Flax the biased one. The running variance is what eval mode normalises
with, so the two drift apart: each step's new term differs by the factor n / (n - 1), where n =
batch x height x width of the layer's input. That is negligible on the wide early layers but not
on the deepest ones (ResNet layer4 and g's bottleneck see 1/32 of the input: 2 x 2 at 64 px,
1 x 1 at 32 px, where n is the batch size); an outside check of g measured running variances
0.23 % apart after one step at 224 px and 9 % at 64 px. Both networks start from torchvision
weights and the released g was trained with PyTorch, so one convention is kept everywhere:
PyTorch's (momentum 0.1 on the new statistics, eps 1e-5).

Variables are named as Flax's (`params`: `scale`, `bias`; `batch_stats`: `mean`, `var`), so
checkpoints and the torchvision weight import (`models.pretrained`) are unchanged. Statistics are
over every axis but the last. Under `jit` over a batch sharded across devices (and hosts), the
means are of the global array, so they are the global batch's statistics: XLA inserts the
all-reduce, as for Flax's BatchNorm without an `axis_name`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from wsol_jax.models.dtypes import output_dtype


class BatchNorm(nn.Module):
    """`(..., C)` -> `(..., C)`, PyTorch `BatchNorm2d` semantics (see the module docstring).

    Train mode (`use_running_average=False`): normalise with the batch mean and biased variance;
    `mean <- (1 - momentum) mean + momentum batch_mean`, `var <- (1 - momentum) var + momentum
    n / (n - 1) batch_var` (not during `init`, as Flax). Eval mode: the running statistics.
    Statistics are computed in at least float32 (bfloat16 compute keeps float32 statistics); the
    output has `dtype`.
    """

    use_running_average: bool
    momentum: float = 0.1  # PyTorch's convention: the weight of the new batch statistics
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    scale_init: Any = nn.initializers.ones
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self, x):
        features = x.shape[-1]
        axes = tuple(range(x.ndim - 1))
        stats_dtype = output_dtype(self.dtype)
        mean_var = self.variable('batch_stats', 'mean', lambda: jnp.zeros((features,), jnp.float32))
        var_var = self.variable('batch_stats', 'var', lambda: jnp.ones((features,), jnp.float32))
        scale = self.param('scale', self.scale_init, (features,), self.param_dtype)
        bias = self.param('bias', self.bias_init, (features,), self.param_dtype)
        x = x.astype(stats_dtype)
        if self.use_running_average:
            mean, var = mean_var.value.astype(stats_dtype), var_var.value.astype(stats_dtype)
        else:
            n = int(np.prod([x.shape[a] for a in axes]))
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)  # biased: what train mode normalises with
            if not self.is_initializing():
                if n < 2:  # PyTorch refuses it too: n / (n - 1) has no value
                    raise ValueError(
                        f'BatchNorm in train mode needs more than one value per channel, got an input '
                        f'of shape {x.shape}: use a batch size of at least 2'
                    )
                m = self.momentum
                mean_var.value = ((1 - m) * mean_var.value + m * mean).astype(mean_var.value.dtype)
                var_var.value = ((1 - m) * var_var.value + m * var * (n / (n - 1))).astype(var_var.value.dtype)
        y = (x - mean) * (jnp.asarray(scale, stats_dtype) * jax.lax.rsqrt(var + self.epsilon))
        return (y + jnp.asarray(bias, stats_dtype)).astype(self.dtype)
