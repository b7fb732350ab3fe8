"""The paper's objectives (Eq. 1-4) and the cross-entropy used to pre-train `f`.

Every loss returns `(total, parts)`, where `parts` is a dict of named scalars for logging and
for the ablations of Table 6 (switch `R`, `L_inner` or `L_outer` off with a weight of 0).

Where the map multiplies the image (`mask_space`):
  * `'normalized'` (default): `I` is the normalised network input `(x / 255 - mean) / std`, so a
    weight of 0 turns a pixel into the dataset-mean colour, which is the least informative input
    for `f` and needs no extra preprocessing after masking. This is what a PyTorch
    implementation that multiplies the loader's normalised tensor does.
  * `'pixels'`: the map multiplies raw pixels in [0, 1] and the product is normalised
    afterwards, so a weight of 0 gives a black pixel.
The choice is one config switch (`config.g.mask_space`); `apply_weight_map` implements both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

Parts = dict[str, jnp.ndarray]
MASK_SPACES = ('normalized', 'pixels')


def classification_loss(
    logits: jnp.ndarray, labels: jnp.ndarray, label_smoothing: float = 0.0
) -> tuple[jnp.ndarray, Parts]:
    """Cross-entropy of `(N, C)` logits against integer labels `(N,)`, batch mean; with
    `label_smoothing` e > 0 the target is `(1 - e) * one_hot + e / C` (Szegedy et al. 2016: a
    classifier from few images that may not drive its logits apart without bound)."""
    if label_smoothing > 0:
        targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
        ce = optax.softmax_cross_entropy(logits, targets).mean()
    else:
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return ce, {'ce': ce, 'accuracy': accuracy}


def blank_loss(logits_blank: jnp.ndarray) -> jnp.ndarray:
    """KL(uniform || softmax(f(blank))) for `(N, C)` logits of blank images (every pixel the colour a
    weight of 0 gives, `apply_weight_map` with a map of zeros); 0 when `f` says nothing there.

    Why: Eq. 1 only resists the sparsity term R if removing the object changes `f`'s answer. An
    `f` trained from scratch never sees the blank, and its answer there is arbitrary; where it is
    confidently one class c (measured on the synthetic benchmark: 0.99 on one seed), `f(I * M)`
    for the images of class c stays right with the object gone but for a few pixels, and `g`
    drops the object on exactly those images. The term makes "no evidence" mean "no class".
    """
    log_p = jax.nn.log_softmax(logits_blank, axis=-1)
    return jnp.mean(-jnp.mean(log_p, axis=-1) - jnp.log(logits_blank.shape[-1]))


def triplet_loss(anchor: jnp.ndarray, positive: jnp.ndarray, negative: jnp.ndarray, margin: float = 1.0) -> jnp.ndarray:
    """Eq. 2: `max(||a - p|| - ||a - n|| + margin, 0)` on `(N, D)` embeddings, batch mean."""
    d_pos = _euclidean(anchor, positive)
    d_neg = _euclidean(anchor, negative)
    return jnp.mean(jnp.maximum(d_pos - d_neg + margin, 0.0))


def _euclidean(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    # The small constant keeps the gradient finite when a == b (e.g. an all-ones map).
    return jnp.sqrt(jnp.sum(jnp.square(a - b), axis=-1) + 1e-12)


def sparsity(weight_map: jnp.ndarray) -> jnp.ndarray:
    """R(M): the L1 norm of the map, averaged over pixels and batch (maps are non-negative)."""
    return jnp.mean(jnp.abs(weight_map))


def apply_weight_map(
    images: jnp.ndarray, weight_map: jnp.ndarray, mask_space: str, mean: jnp.ndarray, std: jnp.ndarray
) -> jnp.ndarray:
    """`I * M` for normalised images `(N, H, W, 3)` and maps `(N, H, W)`; see the module doc."""
    m = weight_map[..., None].astype(images.dtype)
    if mask_space == 'normalized':
        return images * m
    if mask_space == 'pixels':
        pixels = images * std + mean
        return (pixels * m - mean) / std
    raise ValueError(f'mask_space must be one of {MASK_SPACES}, got {mask_space!r}')


def method1_loss(
    logits_image: jnp.ndarray, logits_masked: jnp.ndarray, weight_map: jnp.ndarray, reg_weight: float = 1.0
) -> tuple[jnp.ndarray, Parts]:
    """Eq. 1 with D = cross-entropy and R = L1.

    The target is `f`'s softmax on the unmasked image, a fixed distribution (no gradient flows
    through it); the prediction is `f`'s logits on `I * g(I)`.
    Args: logits `(N, C)` of `f(I)` and `f(I * M)`; `weight_map` `(N, H, W)`.
    """
    target = jax.lax.stop_gradient(jax.nn.softmax(logits_image, axis=-1))
    ce = optax.softmax_cross_entropy(logits_masked, target).mean()
    reg = sparsity(weight_map)
    total = ce + reg_weight * reg
    agree = jnp.mean(jnp.argmax(logits_masked, -1) == jnp.argmax(logits_image, -1))
    return total, {'ce': ce, 'reg': reg, 'agreement': agree, 'map_mean': jnp.mean(weight_map)}


def cosine_distance(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """`1 - cos(a, b)` of `(N, D)` rows, `(N,)` in [0, 2]; the small constant keeps an all-zero row finite."""
    a = a / jnp.sqrt(jnp.sum(jnp.square(a), axis=-1, keepdims=True) + 1e-12)
    b = b / jnp.sqrt(jnp.sum(jnp.square(b), axis=-1, keepdims=True) + 1e-12)
    return 1.0 - jnp.sum(a * b, axis=-1)


def embedding_loss(
    emb_image: jnp.ndarray, emb_masked: jnp.ndarray, weight_map: jnp.ndarray, reg_weight: float = 1.0
) -> tuple[jnp.ndarray, Parts]:
    """Eq. 1 for an encoder f (pooled features, no classes): D = cosine distance of `f(I)` and
    `f(I * M)`, R = L1. Why the cosine: Eq. 1 asks that f "sees the same" in the weighted image; an
    encoder's features carry that in their direction (its users compare them by cosine, and the
    scale of features is arbitrary, which would otherwise set lambda); the target `f(I)` is fixed.
    Args: `(N, D)` features of `f(I)` and `f(I * M)`; `weight_map` `(N, H, W)`."""
    target = jax.lax.stop_gradient(emb_image)
    distance = jnp.mean(cosine_distance(target, emb_masked))
    reg = sparsity(weight_map)
    return distance + reg_weight * reg, {'cosine': distance, 'reg': reg, 'map_mean': jnp.mean(weight_map)}


def inner_triplet_loss(
    emb_image: jnp.ndarray, emb_foreground: jnp.ndarray, emb_background: jnp.ndarray, margin: float = 1.0
) -> jnp.ndarray:
    """Eq. 3: the masked anchor `J^f_a = M_a * I_a` must stay closer to the image `I_a` than its
    complement `J^b_a = (1 - M_a) * I_a` does; `(N, D)` embeddings of `f` -> scalar."""
    return triplet_loss(emb_image, emb_foreground, emb_background, margin)


def outer_triplet_loss(
    emb_anchor_fg: jnp.ndarray, emb_positive_fg: jnp.ndarray, emb_negative_fg: jnp.ndarray, margin: float = 1.0
) -> jnp.ndarray:
    """Eq. 4: the masked anchor `J^f_a` must be closer to the masked positive `J^f_p` (same class)
    than to the masked negative `J^f_n`; `(N, D)` embeddings of `f` -> scalar."""
    return triplet_loss(emb_anchor_fg, emb_positive_fg, emb_negative_fg, margin)


def method2_loss(
    emb: dict[str, jnp.ndarray],
    weight_map_anchor: jnp.ndarray,
    reg_weight: float = 1.0,
    inner_weight: float = 1.0,
    outer_weight: float = 1.0,
    margin: float = 1.0,
) -> tuple[jnp.ndarray, Parts]:
    """Eq. 3 + Eq. 4 + lambda R(M_a).

    `emb` holds `(N, D)` embeddings of `f` for `'I_a'`, `'Jf_a'`, `'Jb_a'`, `'Jf_p'`, `'Jf_n'`
    where `Jf_x = M_x * I_x` and `Jb_x = (1 - M_x) * I_x`. The weights switch terms off for the
    ablations of Table 6.
    """
    inner = inner_triplet_loss(emb['I_a'], emb['Jf_a'], emb['Jb_a'], margin)
    outer = outer_triplet_loss(emb['Jf_a'], emb['Jf_p'], emb['Jf_n'], margin)
    reg = sparsity(weight_map_anchor)
    total = inner_weight * inner + outer_weight * outer + reg_weight * reg
    return total, {'inner': inner, 'outer': outer, 'reg': reg, 'map_mean': jnp.mean(weight_map_anchor)}
