"""The weight-map network `g` (Section 3, "Architecture"): a ResNet encoder that downscales 32x
and a decoder of five upsampling blocks with skip connections, sigmoid output.

Two decoders (`decoder`):
  * `'released'` (default): the first author's released `SkipDecoder` (what-is-where-by-looking,
    `base.py`; the code behind the paper's tables). A bottleneck of two conv3x3-BN-ReLU on the
    deepest features; five blocks `[upsample x2 (bilinear)] -> concat(skip) -> conv3x3 -> BN ->
    ReLU -> conv3x3 -> BN -> ReLU`, with skips from the encoder only: layer3 (1/16), layer2 (1/8),
    layer1 (1/4), the max-pool output (1/4, the fourth block does not upsample) and the stem
    (1/2). Each block's width is its skip's; the last block has one channel and ends in a plain
    convolution; its 1/2-resolution output is resized bilinearly (align_corners=True) to the input
    size before the sigmoid.
  * `'paper'`: the decoder as the paper's text describes it. Each block upsamples x2 (nearest),
    concatenates the encoder features of the same resolution (the last block the input image),
    then conv3x3 - ReLU - conv3x3 - BatchNorm - activation (ReLU; sigmoid in the last block);
    widths `decoder_channels`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from wsol_jax.models.norm import BatchNorm
from wsol_jax.models.dtypes import output_dtype
from wsol_jax.models.resnet import ResNet, scaled, stage_channels

DOWNSCALE = 32
DECODERS = ('released', 'paper')


def _conv(features: int, dtype, name: str, use_bias: bool = True, bias: float = 0.0) -> nn.Conv:
    return nn.Conv(
        features,
        (3, 3),
        padding=((1, 1), (1, 1)),
        use_bias=use_bias,
        dtype=dtype,
        name=name,
        bias_init=nn.initializers.constant(bias),
    )


def _norm(train: bool, dtype, name: str, bias: float = 0.0) -> BatchNorm:
    # PyTorch's BatchNorm2d (momentum 0.1, eps 1e-5, unbiased running variance): models.norm.
    return BatchNorm(use_running_average=not train, dtype=dtype, name=name, bias_init=nn.initializers.constant(bias))


def initial_logit(initial_weight: float) -> float:
    """The bias of `g`'s last layer at initialisation, so that the untrained map is about
    `initial_weight` (0.5: bias 0, as the released code and PyTorch's default initialise it)."""
    if not 0 < initial_weight < 1:
        raise ValueError(f'initial_weight must be in (0, 1), got {initial_weight}')
    return math.log(initial_weight / (1 - initial_weight))


def upsample_nearest2x(x: jnp.ndarray) -> jnp.ndarray:
    """Nearest-neighbour 2x upsampling of `(N, H, W, C)`."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def upsample_bilinear2x(x: jnp.ndarray) -> jnp.ndarray:
    """Bilinear 2x upsampling of `(N, H, W, C)` with half-pixel centres, as PyTorch's
    `nn.Upsample(scale_factor=2, mode='bilinear')` (align_corners=False)."""
    n, h, w, c = x.shape
    return jax.image.resize(x, (n, 2 * h, 2 * w, c), 'bilinear', antialias=False)


def _align_corners_matrix(out_size: int, in_size: int) -> jnp.ndarray:
    """`(out, in)` weights of 1-D linear interpolation with align_corners=True: output pixel `o`
    samples the input at `o * (in - 1) / (out - 1)`."""
    if out_size == 1 or in_size == 1:
        return jnp.zeros((out_size, in_size)).at[:, 0].set(1.0)
    src = jnp.arange(out_size) * (in_size - 1) / (out_size - 1)
    lo = jnp.clip(jnp.floor(src).astype(jnp.int32), 0, in_size - 2)
    frac = src - lo
    rows = jnp.arange(out_size)
    return jnp.zeros((out_size, in_size)).at[rows, lo].add(1 - frac).at[rows, lo + 1].add(frac)


def resize_align_corners(x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
    """PyTorch's `F.interpolate(x, size, mode='bilinear', align_corners=True)` for `(N, H, W, C)`."""
    a_h = _align_corners_matrix(height, x.shape[1]).astype(x.dtype)
    a_w = _align_corners_matrix(width, x.shape[2]).astype(x.dtype)
    return jnp.einsum('oh,nhwc,pw->nopc', a_h, x, a_w)


class ReleasedBlock(nn.Module):
    """`SkipUpBlock` of the released code: [bilinear x2] -> concat(skip) -> conv-BN-ReLU -> conv,
    then BN-ReLU unless `final`."""

    features: int
    upsample: bool = True
    final: bool = False
    dtype: Any = jnp.float32
    final_bias: float = 0.0

    @nn.compact
    def __call__(self, x, skip, train: bool):
        if self.upsample:
            x = upsample_bilinear2x(x)
        y = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
        y = nn.relu(_norm(train, self.dtype, 'bn1')(_conv(self.features, self.dtype, 'conv1')(y)))
        y = _conv(self.features, self.dtype, 'conv2', bias=self.final_bias if self.final else 0.0)(y)
        return y if self.final else nn.relu(_norm(train, self.dtype, 'bn2')(y))


class ReleasedDecoder(nn.Module):
    """The released `SkipDecoder`: `features` of the encoder -> logits `(N, H/2, W/2, 1)`."""

    depth: str
    width: float
    dtype: Any = jnp.float32
    final_bias: float = 0.0

    @nn.compact
    def __call__(self, features: Sequence[jnp.ndarray], train: bool):
        stem, pool, layer1, layer2, layer3, layer4 = features
        ff = stage_channels(self.depth, self.width)  # stem, pool, layer1..4 widths
        y = layer4
        for i in (1, 2):  # the bottleneck on the deepest features
            y = nn.relu(
                _norm(train, self.dtype, f'bottleneck_bn{i}')(_conv(ff[5], self.dtype, f'bottleneck_conv{i}')(y))
            )
        y = ReleasedBlock(ff[4], dtype=self.dtype, name='up1')(y, layer3, train)
        y = ReleasedBlock(ff[3], dtype=self.dtype, name='up2')(y, layer2, train)
        y = ReleasedBlock(ff[2], dtype=self.dtype, name='up3')(y, layer1, train)
        y = ReleasedBlock(ff[0], upsample=False, dtype=self.dtype, name='up4')(y, pool, train)
        return ReleasedBlock(1, final=True, dtype=self.dtype, final_bias=self.final_bias, name='up5')(y, stem, train)


class PaperBlock(nn.Module):
    """The paper text's block: nearest x2 -> concat(skip) -> conv-ReLU -> conv -> BN -> ReLU
    (sigmoid, one channel, in the last block)."""

    features: int
    final: bool
    dtype: Any = jnp.float32
    final_bias: float = 0.0

    @nn.compact
    def __call__(self, x, skip, train: bool):
        y = jnp.concatenate([upsample_nearest2x(x), skip.astype(x.dtype)], axis=-1)
        y = nn.relu(_conv(self.features, self.dtype, 'conv1')(y))
        y = _conv(1 if self.final else self.features, self.dtype, 'conv2', use_bias=False)(y)
        y = _norm(train, self.dtype, 'bn', bias=self.final_bias if self.final else 0.0)(y)
        return y if self.final else nn.relu(y)


class WeightMapNet(nn.Module):
    """`g`: `(N, H, W, 3)` normalised images -> weight map `M` `(N, H, W)` in [0, 1] (float32;
    float64 when computing in float64).

    H and W must be divisible by 32. `decoder` picks the released or the paper-text decoder;
    `decoder_channels` (five widths, scaled by `width`) apply to the paper-text decoder only.
    """

    depth: str = 'resnet18'
    width: float = 1.0
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16)
    dtype: Any = jnp.float32
    decoder: str = 'released'
    initial_weight: float = 0.5  # the untrained map's value (`initial_logit`); no effect on loaded weights

    @nn.compact
    def __call__(self, x, train: bool = False) -> jnp.ndarray:
        height, width = x.shape[1:3]
        if height % DOWNSCALE or width % DOWNSCALE:
            raise ValueError(f'g needs an input size divisible by {DOWNSCALE}, got {height}x{width}')
        features = ResNet(self.depth, self.width, self.dtype, name='encoder')(x, train)
        if self.decoder == 'released':
            logits = ReleasedDecoder(
                self.depth, self.width, self.dtype, initial_logit(self.initial_weight), name='decoder'
            )(features, train)
            logits = resize_align_corners(logits.astype(output_dtype(self.dtype)), height, width)
        elif self.decoder == 'paper':
            if len(self.decoder_channels) != 5:
                raise ValueError(f'g has five decoder blocks; got decoder_channels={self.decoder_channels}')
            stem, _, layer1, layer2, layer3, y = features
            skips = (layer3, layer2, layer1, stem, x.astype(self.dtype))  # strides 16, 8, 4, 2, 1
            for i, (channels, skip) in enumerate(zip(self.decoder_channels, skips)):
                y = PaperBlock(
                    scaled(channels, self.width),
                    final=(i == 4),
                    dtype=self.dtype,
                    final_bias=initial_logit(self.initial_weight),
                    name=f'decoder{i + 1}',
                )(y, skip, train)
            logits = y.astype(output_dtype(self.dtype))
        else:
            raise ValueError(f'decoder must be one of {DECODERS}, got {self.decoder!r}')
        return nn.sigmoid(logits[..., 0])
