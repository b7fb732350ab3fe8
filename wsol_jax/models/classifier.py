"""The frozen network `f` of the paper (Section 3, "Architecture").

A ResNet backbone, global average pooling, and one dense layer: to `num_outputs = d` classes
for Method I (a classifier), or a linear projection to an embedding (200-d in the paper) for
Method II (the Siamese network trained with the triplet loss of Eq. 2).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from wsol_jax.models.dtypes import output_dtype
from wsol_jax.models.resnet import ResNet


class Classifier(nn.Module):
    """`f`: `(N, H, W, 3)` normalised images -> `(N, num_outputs)` logits or embeddings, float32
    (float64 when computing in float64: `output_dtype`)."""
    num_outputs: int
    depth: str = 'resnet18'
    width: float = 1.0
    dtype: Any = jnp.float32

    def setup(self):
        self.backbone = ResNet(self.depth, self.width, self.dtype)
        self.head = nn.Dense(self.num_outputs, dtype=self.dtype)

    def __call__(self, x, train: bool = False) -> jnp.ndarray:
        features = self.backbone(x, train)[-1]
        pooled = jnp.mean(features, axis=(1, 2))
        return self.head(pooled).astype(output_dtype(self.dtype))

    def class_activation_maps(self, x, classes) -> jnp.ndarray:
        """CAM of Zhou et al. (2016) for `classes` `(N,)`: `(N, H/32, W/32)` float32.

        The class score decomposes over positions of the last feature map as
        `sum_c w[c, k] * F[h, w, c]`; negative evidence is clipped (ReLU) as in wsolevaluation.
        """
        features = self.backbone(x, False)[-1].astype(output_dtype(self.dtype))
        self.head(jnp.mean(features, axis=(1, 2)))  # binds the head's parameters
        kernel = self.head.variables['params']['kernel'].astype(output_dtype(self.dtype))  # (C, num_outputs)
        weights = kernel.T[classes]  # (N, C)
        return nn.relu(jnp.einsum('nhwc,nc->nhw', features, weights))
