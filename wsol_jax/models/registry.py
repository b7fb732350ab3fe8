"""The architectures that `f` can have, by name.

The paper's f is a ResNet classifier, but the method treats it as a black box (Section 5: "f does
not need to be a classifier"): any network that maps an image to pooled features `(N, D)` can be
f, followed by a linear head (class logits, or Method II's embedding) or used as it is (an
encoder). Each entry names the backbone module, its hyper-parameters at width 1, whether CAM is
exactly defined for it, and the released weight files whose layout `wsol_jax.models.pretrained`
reads.

`width` scales channel counts as it does for the ResNets (the synthetic CPU benchmark uses narrow
networks): a ViT keeps its number of heads and scales the width of each, a ConvNeXt scales every
stage. `vit_tiny_test`, `convnext_tiny_test` and `resnet_tiny_test` (ResNet-18 with one block per
stage) are small enough for tests on a CPU.

Input statistics differ between releases of the same architecture: torchvision's ResNets, timm's
ConvNeXt, DeiT and DINO were trained on images normalised with ImageNet's mean and std (what
`wsol_jax.data.dataset.normalize` does), timm's `augreg` ViTs on `(x - 0.5) / 0.5`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from wsol_jax.errors import ConfigError
from wsol_jax.models.convnext import ConvNeXt
from wsol_jax.models.resnet import RESNET_SPECS, ResNet, scaled, stage_channels
from wsol_jax.models.vit import ViT


@dataclasses.dataclass(frozen=True)
class Arch:
    family: str  # 'resnet', 'vit' or 'convnext': the module and the weight layout
    options: Mapping[str, Any]  # the module's hyper-parameters at width 1
    cam: bool  # CAM exactly defined: pooled = scale * mean over positions + constant
    weights: str  # released files in the layout that the weight import reads


def _resnet(depth: str, files: str, stem: str = 'imagenet', zero_init_last: bool = False) -> Arch:
    return Arch('resnet', {'depth': depth, 'stem': stem, 'zero_init_last': zero_init_last}, True, files)


def _vit(patch: int, dim: int, depth: int, heads: int, files: str, pos_grid: int = 14) -> Arch:
    # The class token is no average over positions: no CAM.
    return Arch(
        'vit',
        {'patch_size': patch, 'embed_dim': dim, 'depth': depth, 'num_heads': heads, 'pos_grid': pos_grid},
        False,
        files,
    )


def _convnext(depths: tuple[int, ...], dims: tuple[int, ...], files: str) -> Arch:
    return Arch('convnext', {'depths': depths, 'dims': dims}, True, files)


_TORCHVISION = {'resnet18': 'f37072fd', 'resnet34': 'b627a593', 'resnet50': '0676ba61', 'resnet101': '63fe2227'}

ARCHS: dict[str, Arch] = {
    **{d: _resnet(d, f'torchvision {d}-{h}.pth, timm {d}.*/model.safetensors') for d, h in _TORCHVISION.items()},
    'vit_ti16': _vit(
        16, 192, 12, 3, 'timm vit_tiny_patch16_224.*/model.safetensors, DeiT deit_tiny_patch16_224-a1311bcf.pth'
    ),
    'vit_s16': _vit(
        16,
        384,
        12,
        6,
        'timm vit_small_patch16_224.*/model.safetensors (.augreg_in21k_ft_in1k, '
        '.dino, ...), DeiT deit_small_patch16_224-cd65a155.pth, '
        'DINO dino_deitsmall16_pretrain.pth',
    ),
    'vit_b16': _vit(
        16,
        768,
        12,
        12,
        'timm vit_base_patch16_224.*/model.safetensors (.augreg2_in21k_ft_in1k, '
        '.dino, ...), DeiT deit_base_patch16_224-b5f2ef4d.pth, '
        'DINO dino_vitbase16_pretrain.pth',
    ),
    'convnext_tiny': _convnext(
        (3, 3, 9, 3),
        (96, 192, 384, 768),
        'timm convnext_tiny.*/model.safetensors (.fb_in1k, .fb_in22k, .in12k_ft_in1k, ...)',
    ),
    # The synthetic CPU benchmark's ViT (configs/synthetic.py:method1,vit): ViT-Ti's width and heads
    # at half its depth, patch 8 on an 8x8 grid, so that its 64 px images need no resampled
    # position embeddings; at the CPU recipe's width 0.25 it is 48 wide (3 heads of 16).
    'vit_cpu8': _vit(8, 192, 6, 3, 'files saved from the same small timm-layout model', pos_grid=8),
    # Tiny versions for tests (patch 8 on a 4x4 grid: 32 px).
    'vit_tiny_test': _vit(8, 32, 2, 2, 'files saved from the same small timm-layout model', pos_grid=4),
    'convnext_tiny_test': _convnext((1, 1, 2, 1), (8, 16, 24, 32), 'files saved from the same small timm-layout model'),
    # ResNet-18 with the 3x3 stride-1 stem of the ResNets for small images (models.resnet): f from
    # scratch on 64 px crops, whose blocks would otherwise start at 16x16; trained from scratch
    # only, so it starts as timm's ResNets do (zero-initialised last BatchNorm of each block).
    'resnet18_small': _resnet(
        'resnet18', 'files saved from the same model (no ImageNet release has its stem)', 'small', zero_init_last=True
    ),
    'resnet_tiny_test': _resnet('resnet_tiny_test', 'files saved from the same small torchvision-layout model'),
}
assert set(RESNET_SPECS) <= set(ARCHS)


def get(name: str) -> Arch:
    """The registry entry `name`; `ConfigError` naming the choices for any other."""
    if name not in ARCHS:
        raise ConfigError(f'unknown architecture {name!r} for f: choose one of {", ".join(ARCHS)}')
    return ARCHS[name]


def _scaled_options(arch: Arch, width: float) -> dict[str, Any]:
    """The module's hyper-parameters at `width`."""
    options = dict(arch.options)
    if arch.family == 'vit':  # keep the heads, scale the width of each
        heads = options['num_heads']
        options['embed_dim'] = heads * scaled(options['embed_dim'] // heads, width)
    elif arch.family == 'convnext':
        options['dims'] = tuple(scaled(c, width) for c in options['dims'])
    return options


def build(name: str, width: float = 1.0, dtype: Any = jnp.float32) -> nn.Module:
    """The backbone module of `name` at `width`: `ResNet` (its call returns the feature pyramid),
    `ViT` or `ConvNeXt` (their calls return pooled features `(N, D)`)."""
    arch = get(name)
    if width <= 0:
        raise ConfigError(f'the width of {name} must be positive, got {width}')
    options = _scaled_options(arch, width)
    if arch.family == 'resnet':
        return ResNet(options['depth'], width, dtype, options['stem'], options['zero_init_last'])
    return {'vit': ViT, 'convnext': ConvNeXt}[arch.family](**options, dtype=dtype)


def feature_dim(name: str, width: float = 1.0) -> int:
    """D of the pooled features of `name` at `width` (resnet18: 512, resnet50: 2048, vit_s16: 384)."""
    arch = get(name)
    if arch.family == 'resnet':
        return stage_channels(arch.options['depth'], width)[-1]
    options = _scaled_options(arch, width)
    return options['embed_dim'] if arch.family == 'vit' else options['dims'][-1]


def has_cam(name: str) -> bool:
    """Whether the CAM baseline is defined for an f of architecture `name` (with a head)."""
    return get(name).cam
