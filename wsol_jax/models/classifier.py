"""The frozen network `f` of the paper (Section 3, "Architecture"), of any registered architecture.

A backbone (`wsol_jax.models.registry`: the paper's ResNets with global average pooling, ViTs,
ConvNeXt) gives pooled features `(N, D)`. With `kind='classifier'` one dense layer follows: to
`num_outputs = d` classes for Method I, or a linear projection to an embedding (200-d in the
paper) for Method II (the Siamese network trained with the triplet loss of Eq. 2). With
`kind='encoder'` the pooled features are the output (f as a black box, Section 5: e.g. a
self-supervised DINO ViT), and there is no head.

The parameters are `{'backbone': ..., 'head': ...}` for every architecture (ResNet checkpoints and
the Siamese f's start from the classifier's backbone rely on these names).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from wsol_jax.errors import ConfigError
from wsol_jax.models.dtypes import output_dtype
from wsol_jax.models import registry

KINDS = ('classifier', 'encoder')


class Classifier(nn.Module):
    """`f`: `(N, H, W, 3)` normalised images -> `(N, num_outputs)` logits or embeddings (`kind=
    'classifier'`), or `(N, D)` pooled features (`kind='encoder'`; `num_outputs` 0 or D), in
    `output_dtype(dtype)` (float32 for float32 and bfloat16 compute)."""

    num_outputs: int
    arch: str = 'resnet18'
    width: float = 1.0
    dtype: Any = jnp.float32
    kind: str = 'classifier'

    def setup(self):
        if self.kind not in KINDS:
            raise ConfigError(f'the kind of f must be one of {KINDS}, got {self.kind!r}')
        self.backbone = registry.build(self.arch, self.width, self.dtype)
        if self.kind == 'classifier':
            self.head = nn.Dense(self.num_outputs, dtype=self.dtype)
        elif self.num_outputs not in (0, registry.feature_dim(self.arch, self.width)):
            raise ConfigError(
                f'an encoder f ({self.arch}, width {self.width}) outputs its '
                f'{registry.feature_dim(self.arch, self.width)}-d pooled features, not '
                f'{self.num_outputs}: set the output size to 0 or that, or use a classifier f'
            )

    @property
    def family(self) -> str:
        return registry.get(self.arch).family

    def _out(self, y) -> jnp.ndarray:
        return y.astype(output_dtype(self.dtype))

    def features(self, x, train: bool = False) -> jnp.ndarray:
        """Pooled features `(N, D)` in the compute dtype. The ResNet returns its feature pyramid
        (g's U-Net uses all of it); f averages the last map over positions."""
        out = self.backbone(x, train)
        return jnp.mean(out[-1], axis=(1, 2)) if self.family == 'resnet' else out

    def embed(self, x) -> jnp.ndarray:
        """The pooled features `(N, D)` of f as an encoder (evaluation mode), in `output_dtype`: what g
        compares when f is used without its head (`f.kind='encoder'`)."""
        return self._out(self.features(x, False))

    def __call__(self, x, train: bool = False) -> jnp.ndarray:
        pooled = self.features(x, train)
        return self._out(self.head(pooled) if self.kind == 'classifier' else pooled)

    def _cam_terms(self, x):
        """`(terms (N, h, w, D), scale (N,), offset (D,))` with pooled features `scale *
        mean_hw(terms) + offset`: the last ResNet map itself (scale 1, offset 0), or ConvNeXt's
        decomposition through its head LayerNorm."""
        if self.family == 'resnet':
            features = self._out(self.backbone(x, False)[-1])
            n, c = features.shape[0], features.shape[-1]
            return features, jnp.ones((n,), features.dtype), jnp.zeros((c,), features.dtype)
        return self.backbone.cam_terms(x)

    def class_activation_maps(self, x, classes, clip: bool = True) -> jnp.ndarray:
        """CAM of Zhou et al. (2016) for `classes` `(N,)`: `(N, h, w)` (h = H/32 for the ResNets
        and ConvNeXt, H/16 for resnet18_small), at least float32.

        The class score decomposes over positions: `logit_k = b_k + w_k . offset + mean_hw
        M_k[h, w]` with `M_k = scale * sum_c w[c, k] * terms[h, w, c]` (for a ResNet `terms` is
        the last feature map, `scale` 1, `offset` 0). Negative evidence is clipped (ReLU) as in
        wsolevaluation (`clip=False`: the signed `M_k`). Raises `ConfigError` where CAM is not
        defined (a ViT's class token, an encoder without classes).
        """
        if self.kind != 'classifier' or not registry.has_cam(self.arch):
            raise ConfigError(
                f'CAM is not defined for an f of architecture {self.arch} and kind {self.kind}: it needs '
                'a class head on globally average-pooled features (a ResNet or ConvNeXt classifier)'
            )
        terms, scale, offset = self._cam_terms(x)
        self.head(scale[:, None] * jnp.mean(terms, axis=(1, 2)) + offset)  # binds the head's parameters
        kernel = self.head.variables['params']['kernel'].astype(terms.dtype)  # (D, num_outputs)
        weights = kernel.T[classes]  # (N, D)
        maps = scale[:, None, None] * jnp.einsum('nhwc,nc->nhw', terms, weights)
        return nn.relu(maps) if clip else maps
