"""Vision Transformer backbones in the layout of timm's `vit_*` checkpoints (shared by DeiT and DINO).

Pre-norm blocks (LayerNorm eps 1e-6), a class token, learned absolute position embeddings that
include the class token's, multi-head attention with one `qkv` projection (with bias) and exact
(erf) GELU in the MLP (ratio 4). The pooled feature is timm's default `global_pool='token'`: the
class token after the final LayerNorm. Module names mirror timm's tensor names (`blocks_3/attn/qkv`
for `blocks.3.attn.qkv.weight`), so that `wsol_jax.models.pretrained` maps a state dict by name.

The position embeddings are stored for a square grid of `pos_grid` patches (14 for 224 px and
patch 16, as the released checkpoints) and resampled, bicubically as timm's
`resample_abs_pos_embed`, when an input has another patch grid (the CPU presets run at 32-64 px:
a 2x2 to 4x4 grid for patch 16). There is no dropout and no stochastic depth, so `train` changes
nothing. `dtype` is the compute dtype (e.g. bfloat16); parameters stay float32.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from wsol_jax.models.dtypes import output_dtype
from wsol_jax.errors import ConfigError

LN_EPS = 1e-6  # timm's `partial(nn.LayerNorm, eps=1e-6)` in every ViT and ConvNeXt
CUBIC_A = -0.5  # the cubic kernel of PyTorch's antialiased bicubic resize (PIL's), not -0.75


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, evaluated at `x`."""
    x = np.abs(x)
    near = ((CUBIC_A + 2) * x - (CUBIC_A + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * CUBIC_A
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


@functools.lru_cache(maxsize=None)
def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """`(n_out, n_in)` float64 weights of a 1-D resize from `n_in` to `n_out` samples, as
    `torch.nn.functional.interpolate(mode='bicubic', antialias=True, align_corners=False)` computes
    them (timm's `resample_abs_pos_embed` passes `antialias=True`): output `i` is centred at
    `(i + 0.5) * n_in / n_out` in input coordinates; when shrinking, the kernel is stretched by
    the scale (anti-aliasing), and taps outside the input are dropped and the rest renormalised."""
    scale = n_in / n_out
    support = 2.0 * max(scale, 1.0)
    inv = 1.0 / max(scale, 1.0)
    out = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = scale * (i + 0.5)
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        taps = np.arange(lo, hi)
        weights = _cubic((taps - centre + 0.5) * inv)
        out[i, lo:hi] = weights / weights.sum()
    return out


def resample_pos_embed(posemb, old_grid: tuple[int, int], new_grid: tuple[int, int]):
    """Position embeddings `(1, 1 + gh * gw, D)` of the patch grid `old_grid` (the first entry is
    the class token's, kept as it is) resampled to `new_grid` `(1, 1 + nh * nw, D)`, separably
    with `bicubic_matrix` along rows and columns (timm's `resample_abs_pos_embed`). A numpy input
    (weight import) gives numpy, a JAX array (the forward pass) gives JAX."""
    if tuple(old_grid) == tuple(new_grid):
        return posemb
    xp = np if isinstance(posemb, np.ndarray) else jnp
    (gh, gw), (nh, nw) = old_grid, new_grid
    dim = posemb.shape[-1]
    grid = posemb[0, 1:].reshape(gh, gw, dim)
    rows = bicubic_matrix(gh, nh).astype(posemb.dtype)
    cols = bicubic_matrix(gw, nw).astype(posemb.dtype)
    grid = xp.einsum('ih,jw,hwd->ijd', rows, cols, grid)
    return xp.concatenate([posemb[:, :1], grid.reshape(1, nh * nw, dim)], axis=1)


def _dense(features: int, dtype, name: str) -> nn.Dense:
    """timm's Linear initialisation: truncated normal (std 0.02) weights, zero bias."""
    return nn.Dense(features, dtype=dtype, kernel_init=nn.initializers.truncated_normal(0.02), name=name)


def layer_norm(dtype, name: str) -> nn.LayerNorm:
    """LayerNorm over the last axis with eps 1e-6 and the two-pass variance (`E[(x - mean)^2]`,
    as PyTorch computes it; Flax's default `E[x^2] - mean^2` cancels badly when |mean| >> std)."""
    return nn.LayerNorm(epsilon=LN_EPS, use_fast_variance=False, dtype=dtype, name=name)


class Mlp(nn.Module):
    """timm's `Mlp`: fc1 (`hidden` units) - exact GELU - fc2 (back to the input width)."""

    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        y = nn.gelu(_dense(self.hidden, self.dtype, 'fc1')(x), approximate=False)
        return _dense(x.shape[-1], self.dtype, 'fc2')(y)


class Attention(nn.Module):
    """Multi-head self-attention over tokens `(N, T, D)`: one `qkv` projection split as timm
    reshapes it, `(N, T, 3, heads, D / heads)`, softmax(q k^T / sqrt(D / heads)) v, then `proj`."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        n, t, d = x.shape
        head_dim = d // self.num_heads
        qkv = _dense(3 * d, self.dtype, 'qkv')(x).reshape(n, t, 3, self.num_heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (N, T, heads, head_dim)
        logits = jnp.einsum('nqhc,nkhc->nhqk', q, k) * head_dim**-0.5
        # The softmax in at least float32: in bfloat16 its normaliser loses most of its digits.
        attn = jax.nn.softmax(logits.astype(output_dtype(self.dtype)), axis=-1)
        out = jnp.einsum('nhqk,nkhc->nqhc', attn.astype(self.dtype), v).reshape(n, t, d)
        return _dense(d, self.dtype, 'proj')(out)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then + mlp(norm2(x))."""

    num_heads: int
    mlp_ratio: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = x + Attention(self.num_heads, self.dtype, name='attn')(layer_norm(self.dtype, 'norm1')(x))
        hidden = int(x.shape[-1] * self.mlp_ratio)
        return x + Mlp(hidden, self.dtype, name='mlp')(layer_norm(self.dtype, 'norm2')(x))


class ViT(nn.Module):
    """ViT backbone without the classification head.

    Input: `(N, H, W, 3)` normalised images, H and W multiples of `patch_size`. Output: `(N,
    embed_dim)` pooled features, the class token after the final LayerNorm (timm's
    `forward_head(pre_logits=True)` with `global_pool='token'`), in the compute dtype.
    """

    patch_size: int = 16
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    pos_grid: int = 14
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False) -> jnp.ndarray:
        n, h, w, _ = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ConfigError(
                f'a ViT with patch size {p} needs an input side that is a multiple of {p}, '
                f'got {h}x{w}: change the crop size'
            )
        tokens = nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding='VALID', dtype=self.dtype, name='patch_embed')(
            x.astype(self.dtype)
        )  # (N, H/p, W/p, D)
        tokens = tokens.reshape(n, (h // p) * (w // p), self.embed_dim)
        cls = self.param('cls_token', nn.initializers.normal(1e-6), (1, 1, self.embed_dim))
        pos = self.param('pos_embed', nn.initializers.truncated_normal(0.02), (1, 1 + self.pos_grid**2, self.embed_dim))
        pos = resample_pos_embed(pos, (self.pos_grid, self.pos_grid), (h // p, w // p))
        cls = jnp.broadcast_to(cls.astype(self.dtype), (n, 1, self.embed_dim))
        tokens = jnp.concatenate([cls, tokens], axis=1) + pos.astype(self.dtype)  # (N, 1 + HW/p^2, D)
        for i in range(self.depth):
            tokens = Block(self.num_heads, self.mlp_ratio, self.dtype, name=f'blocks_{i}')(tokens)
        return layer_norm(self.dtype, 'norm')(tokens)[:, 0]
