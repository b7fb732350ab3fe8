"""ResNet-18/34/50/101 backbones, structurally identical to torchvision's.

Same blocks, strides (v1.5: the stride of a bottleneck sits on its 3x3 conv), padding and
BatchNorm placement, so that parameter shapes match torchvision one to one (NHWC/HWIO layout)
and ImageNet weights can be mapped in by name (`wsol_jax.models.pretrained`).

`width` scales every channel count (1.0 = torchvision); the synthetic CPU benchmark uses a
narrow network. `dtype` is the compute dtype (e.g. bfloat16); parameters stay float32.

`stem='small'` replaces the 7x7 stride-2 convolution by a 3x3 stride-1 one (the stem of the
ResNets for small images, He et al. 2016, Sec. 4.2, kept here with its max-pool): the blocks see
the image at half its side instead of a quarter (a 64 px crop: 32x32 at layer1, 4x4 at layer4)
for about 4x the computation. No ImageNet release has this stem; it is for f trained from scratch,
with `zero_init_last` (each block's last BatchNorm scale starts at zero).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from wsol_jax.models.norm import BatchNorm

ModuleDef = Any

# name -> (block kind, blocks per stage)
RESNET_SPECS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    'resnet18': ('basic', (2, 2, 2, 2)),
    'resnet34': ('basic', (3, 4, 6, 3)),
    'resnet50': ('bottleneck', (3, 4, 6, 3)),
    'resnet101': ('bottleneck', (3, 4, 23, 3)),
    # For tests on a CPU: ResNet-18's layers (stem, basic blocks, the projection shortcuts of
    # stages 2-4, BatchNorm) with one block per stage, half its convolutions to compile.
    'resnet_tiny_test': ('basic', (1, 1, 1, 1)),
}
EXPANSION = {'basic': 1, 'bottleneck': 4}
STAGE_WIDTHS = (64, 128, 256, 512)
STEMS = ('imagenet', 'small')


def scaled(channels: int, width: float) -> int:
    """Channel count `channels * width`, at least 1."""
    return max(1, int(round(channels * width)))


def stage_channels(depth: str, width: float = 1.0) -> tuple[int, ...]:
    """Output channels of (stem, max-pool, layer1, ..., layer4) for a backbone, e.g. resnet18 at
    width 1: (64, 64, 64, 128, 256, 512); resnet50: (64, 64, 256, 512, 1024, 2048)."""
    kind, _ = _spec(depth)
    return (scaled(64, width),) * 2 + tuple(scaled(c, width) * EXPANSION[kind] for c in STAGE_WIDTHS)


def _spec(depth: str) -> tuple[str, tuple[int, ...]]:
    if depth not in RESNET_SPECS:
        raise ValueError(f'unknown ResNet depth {depth!r}; choose one of {sorted(RESNET_SPECS)}')
    return RESNET_SPECS[depth]


def _pad(k: int) -> tuple[tuple[int, int], tuple[int, int]]:
    # torchvision pads k // 2 on every side; Flax's 'SAME' pads asymmetrically for stride 2.
    return ((k // 2, k // 2), (k // 2, k // 2))


def _shortcut(block: nn.Module, x, out_channels: int):
    """The identity, or torchvision's `downsample` (conv1x1(stride) - bn) when the shape changes.
    Called inside a block's compact `__call__`, so the layers belong to that block."""
    if block.stride == 1 and x.shape[-1] == out_channels:
        return x
    y = block.conv(out_channels, (1, 1), (block.stride, block.stride), padding=0, name='downsample_conv')(x)
    return block.norm(name='downsample_bn')(y)


def _last_norm_init(zero: bool):
    """The scale init of a block's last BatchNorm: zero makes the residual branch start at 0, each
    block the identity on its shortcut (Goyal et al. 2017; timm's `zero_init_last`), so a ResNet
    from scratch starts as a shallow network."""
    return nn.initializers.zeros if zero else nn.initializers.ones


class BasicBlock(nn.Module):
    """torchvision BasicBlock: conv3x3(stride) - bn - relu - conv3x3 - bn, + shortcut, relu."""

    planes: int
    stride: int
    conv: ModuleDef
    norm: ModuleDef
    zero_init_last: bool = False

    @nn.compact
    def __call__(self, x):
        y = self.conv(self.planes, (3, 3), (self.stride, self.stride), padding=_pad(3), name='conv1')(x)
        y = nn.relu(self.norm(name='bn1')(y))
        y = self.conv(self.planes, (3, 3), padding=_pad(3), name='conv2')(y)
        y = self.norm(name='bn2', scale_init=_last_norm_init(self.zero_init_last))(y)
        return nn.relu(y + _shortcut(self, x, self.planes))


class Bottleneck(nn.Module):
    """torchvision Bottleneck (v1.5): conv1x1 - conv3x3(stride) - conv1x1(x4), bn after each."""

    planes: int
    stride: int
    conv: ModuleDef
    norm: ModuleDef
    zero_init_last: bool = False

    @nn.compact
    def __call__(self, x):
        out_ch = self.planes * EXPANSION['bottleneck']
        y = nn.relu(self.norm(name='bn1')(self.conv(self.planes, (1, 1), padding=0, name='conv1')(x)))
        y = self.conv(self.planes, (3, 3), (self.stride, self.stride), padding=_pad(3), name='conv2')(y)
        y = nn.relu(self.norm(name='bn2')(y))
        y = self.conv(out_ch, (1, 1), padding=0, name='conv3')(y)
        y = self.norm(name='bn3', scale_init=_last_norm_init(self.zero_init_last))(y)
        return nn.relu(y + _shortcut(self, x, out_ch))


class ResNet(nn.Module):
    """ResNet backbone without the classification head.

    Input: `(N, H, W, 3)` normalised images. Output: the list of feature maps
    `[stem (H/2), max-pool (H/4), layer1 (H/4), layer2 (H/8), layer3 (H/16), layer4 (H/32)]`,
    which the classifier pools (the last) and the U-Net decoders use as skip connections; with
    `stem='small'` each map is twice as large (stem H, ..., layer4 H/16).
    """

    depth: str = 'resnet18'
    width: float = 1.0
    dtype: Any = jnp.float32
    stem: str = 'imagenet'
    zero_init_last: bool = False  # for training from scratch; loaded weights replace the init

    @nn.compact
    def __call__(self, x, train: bool = False) -> Sequence[jnp.ndarray]:
        kind, blocks = _spec(self.depth)
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
        # torchvision's BatchNorm2d, running statistics included (models.norm).
        norm = functools.partial(BatchNorm, use_running_average=not train, dtype=self.dtype)
        block_cls = BasicBlock if kind == 'basic' else Bottleneck
        x = x.astype(self.dtype)
        if self.stem not in STEMS:
            raise ValueError(f'unknown ResNet stem {self.stem!r}; choose one of {STEMS}')
        k, s = (7, 2) if self.stem == 'imagenet' else (3, 1)
        x = conv(scaled(64, self.width), (k, k), (s, s), padding=_pad(k), name='conv1')(x)
        x = nn.relu(norm(name='bn1')(x))
        features = [x]
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_pad(3))
        features.append(x)
        for stage, (n_blocks, planes) in enumerate(zip(blocks, STAGE_WIDTHS)):
            for b in range(n_blocks):
                stride = 2 if stage > 0 and b == 0 else 1
                block = block_cls(
                    scaled(planes, self.width), stride, conv, norm, self.zero_init_last, name=f'layer{stage + 1}_{b}'
                )
                x = block(x)
            features.append(x)
        return features
