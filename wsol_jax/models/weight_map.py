"""The weight-map network `g` of the paper (Section 3, "Architecture").

A U-Net: a ResNet encoder that downscales five times (32x), and a decoder of five upsampling
blocks. Each block doubles the resolution, concatenates the skip connection from the encoder
stage of the same spatial resolution (the last block receives the input image itself), then
applies conv3x3 (padding 1) - ReLU - conv3x3 (padding 1) - BatchNorm - activation: ReLU in the
first four blocks, sigmoid in the last, whose second convolution has one output channel.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from wsol_jax.models.resnet import ResNet, scaled

DOWNSCALE = 32


def upsample2x(x: jnp.ndarray) -> jnp.ndarray:
    """Nearest-neighbour 2x upsampling of `(N, H, W, C)`."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class DecoderBlock(nn.Module):
    features: int
    final: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, skip, train: bool):
        y = jnp.concatenate([upsample2x(x), skip.astype(x.dtype)], axis=-1)
        y = nn.relu(nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                            name='conv1')(y))
        out = 1 if self.final else self.features
        y = nn.Conv(out, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, dtype=self.dtype,
                    name='conv2')(y)
        y = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, name='bn')(y)
        if self.final:
            return nn.sigmoid(y.astype(jnp.float32))
        return nn.relu(y)


class WeightMapNet(nn.Module):
    """`g`: `(N, H, W, 3)` normalised images -> weight map `M` `(N, H, W)` in [0, 1] (float32).

    H and W must be divisible by 32. `decoder_channels` are the widths of the five decoder
    blocks before scaling by `width`; the last block ends in one channel.
    """
    depth: str = 'resnet18'
    width: float = 1.0
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False) -> jnp.ndarray:
        height, width = x.shape[1:3]
        if height % DOWNSCALE or width % DOWNSCALE:
            raise ValueError(f'g needs an input size divisible by {DOWNSCALE}, got {height}x{width}')
        if len(self.decoder_channels) != 5:
            raise ValueError(f'g has five decoder blocks; got decoder_channels={self.decoder_channels}')
        features = ResNet(self.depth, self.width, self.dtype, name='encoder')(x, train)
        skips = [x.astype(self.dtype)] + list(features[:-1])  # strides 1, 2, 4, 8, 16
        y = features[-1]  # stride 32
        for i, channels in enumerate(self.decoder_channels):
            y = DecoderBlock(scaled(channels, self.width), final=(i == 4), dtype=self.dtype,
                             name=f'decoder{i + 1}')(y, skips[-(i + 1)], train)
        return y[..., 0]
