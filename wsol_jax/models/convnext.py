"""ConvNeXt backbones in the layout of timm's `convnext_*` checkpoints.

A 4x4 stride-4 "patchify" stem with LayerNorm, four stages (stages 1-3 open with LayerNorm and a
2x2 stride-2 convolution), blocks of depthwise 7x7 convolution - LayerNorm - Linear (x4) - exact
GELU - Linear, scaled per channel by the layer scale `gamma` and added to the input; then global
average pooling and timm's head LayerNorm (`head.norm`). Every LayerNorm normalises channels with
eps 1e-6 (timm's `LayerNorm2d` is a LayerNorm over channels). Module names mirror timm's tensor
names (`stages_1/downsample_1` for `stages.1.downsample.1.weight`). Stochastic depth is a
training-time regulariser that is off at evaluation; it is not implemented, so `train` changes
nothing. `dtype` is the compute dtype; parameters stay float32.

CAM (Zhou et al. 2016) is exactly defined here despite the LayerNorm after the pooling: with
`p = mean_hw F` and the per-image scalars `mu = mean_c p`, `sigma = sqrt(var_c p + eps)`, the
pooled feature is `gamma * (p - mu) / sigma + beta`, and since `p - mu = mean_hw (F_hw - mean_c
F_hw)`, it is `(1 / sigma) * mean_hw [gamma * (F_hw - mean_c F_hw)] + beta`: an average over
positions of a per-position linear term, scaled by one positive number per image, plus a
constant. `ConvNeXt.cam_terms` returns those three parts.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from wsol_jax.models.dtypes import output_dtype
from wsol_jax.models.vit import LN_EPS, Mlp, layer_norm


class Block(nn.Module):
    """ConvNeXt block: x + gamma * fc2(gelu(fc1(norm(conv_dw(x))))), on `(N, H, W, C)`."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        y = nn.Conv(c, (7, 7), padding=((3, 3), (3, 3)), feature_group_count=c, dtype=self.dtype, name='conv_dw')(x)
        y = Mlp(4 * c, self.dtype, name='mlp')(layer_norm(self.dtype, 'norm')(y))
        gamma = self.param('gamma', nn.initializers.constant(1e-6), (c,))  # timm's ls_init_value
        return x + gamma.astype(self.dtype) * y


class Stage(nn.Module):
    """Optional downsampling (LayerNorm, 2x2 stride-2 conv to `channels`), then `depth` blocks."""

    channels: int
    depth: int
    downsample: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        if self.downsample:
            x = layer_norm(self.dtype, 'downsample_0')(x)
            x = nn.Conv(self.channels, (2, 2), strides=(2, 2), padding='VALID', dtype=self.dtype, name='downsample_1')(
                x
            )
        for j in range(self.depth):
            x = Block(self.dtype, name=f'blocks_{j}')(x)
        return x


class ConvNeXt(nn.Module):
    """ConvNeXt backbone without the classification layer (`head.fc`).

    Input: `(N, H, W, 3)` normalised images. `feature_map`: the last stage `(N, H/32, W/32,
    dims[-1])`; the call: `(N, dims[-1])` pooled features, the global average after timm's head
    LayerNorm (`forward_head(pre_logits=True)`), both in the compute dtype.
    """

    depths: Sequence[int] = (3, 3, 9, 3)
    dims: Sequence[int] = (96, 192, 384, 768)
    dtype: Any = jnp.float32

    def setup(self):
        self.stem = [
            nn.Conv(self.dims[0], (4, 4), strides=(4, 4), padding='VALID', dtype=self.dtype),
            layer_norm(self.dtype, None),
        ]
        self.stages = [Stage(c, d, i > 0, self.dtype) for i, (c, d) in enumerate(zip(self.dims, self.depths))]
        self.head_norm = layer_norm(self.dtype, None)

    def feature_map(self, x) -> jnp.ndarray:
        x = x.astype(self.dtype)
        for layer in self.stem:
            x = layer(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def __call__(self, x, train: bool = False) -> jnp.ndarray:
        return self.head_norm(jnp.mean(self.feature_map(x), axis=(1, 2)))

    def cam_terms(self, x) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        """`(terms (N, h, w, C), scale (N,), offset (C,))`, at least float32, with
        `pooled = scale * mean_hw(terms) + offset` (module docstring): terms `gamma * (F_hw -
        mean_c F_hw)`, scale `1 / sigma`, offset the head LayerNorm's bias `beta`."""
        out = output_dtype(self.dtype)
        features = self.feature_map(x).astype(out)
        pooled = jnp.mean(features, axis=(1, 2))
        self.head_norm(pooled)  # binds the head norm's parameters
        params = self.head_norm.variables['params']
        sigma = jnp.sqrt(jnp.var(pooled, axis=-1) + LN_EPS)
        terms = params['scale'].astype(out) * (features - jnp.mean(features, axis=-1, keepdims=True))
        return terms, 1.0 / sigma, params['bias'].astype(out)
