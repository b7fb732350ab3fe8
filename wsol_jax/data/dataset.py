"""Splits of decoded uint8 images, their annotations, and the input transforms.

Images are decoded and resized once into the on-disk record cache (`records.py`); `Split.images`
`(N, S, S, 3)` reads the rows it is indexed with (a numpy array works too, for library use).
Cropping, flipping and normalisation run on the device inside the compiled steps (`augment`,
`center_crop`), so the host never touches pixels after the cache. Labels and boxes are small
and held in memory.

Ground truth is kept in the original image's pixels (boxes `(N, K, 4)` float `[x0, y0, x1, y1]`
with `PAD_BOX` rows, masks at the original resolution, the original `(width, height)`), and each
evaluation protocol scales it once to the size it evaluates at: the paper's (resize to the cache
size, centre crop) here, `crop_protocol_boxes` and `crop_protocol_masks`; wsolevaluation's (the
whole image at 224) in `wsol_jax.wsolevaluation`.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from wsol_jax.data.split import Split  # noqa: F401  (re-exported: wsol_jax.data.dataset.Split)
from wsol_jax.errors import ConfigError, DataError
from wsol_jax.annotations import PAD_BOX, valid_boxes

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def holdout_indices(n: int, num_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic `(train, validation)` indices: `num_val` of `n` training examples held out."""
    if not 0 < num_val < n:
        raise ConfigError(
            f'config.data.num_val={num_val} must be between 1 and the number of training images - 1 ({n - 1})'
        )
    order = np.asarray(jax.random.permutation(jax.random.key(seed), n))
    return np.sort(order[num_val:]), np.sort(order[:num_val])


@dataclasses.dataclass
class Dataset:
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: Optional[list] = None  # where the data set names its classes

    def names_of_classes(self) -> list[str]:
        """The class names, or `class_<k>` where the data set has none."""
        if self.class_names and len(self.class_names) == self.num_classes:
            return [str(n) for n in self.class_names]
        return [f'class_{k}' for k in range(self.num_classes)]


def input_float() -> jnp.dtype:
    """The float type of network inputs: float32, or float64 where JAX runs with 64-bit types
    (`jax.enable_x64`, `config.dtype='float64'`), so that a float64 check is float64 throughout."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def normalize(images_uint8: jnp.ndarray) -> jnp.ndarray:
    """uint8 `(N, H, W, 3)` -> float32 `(x / 255 - mean) / std` (ImageNet statistics; float64 under
    `input_float`'s 64-bit mode)."""
    return (images_uint8.astype(input_float()) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def augment(
    images_uint8: jnp.ndarray,
    rng: jax.Array,
    crop_size: int,
    flip: bool = True,
    scale_jitter: float = 0.0,
    colour_jitter: float = 0.0,
) -> jnp.ndarray:
    """Training transform on the device: random `crop_size` crop, horizontal flip with p=0.5
    (`flip=False`: none, for classes that mirroring changes: letters, digits), normalisation.
    `(N, S, S, 3)` uint8 -> `(N, crop, crop, 3)` float32.

    `scale_jitter` s > 0: the crop is taken at a zoom drawn log-uniformly from [1/(1+s), 1+s] (a
    window of `crop / zoom` pixels, at most the image, resized to `crop`; bilinear, antialiased),
    so that f sees its objects at more sizes than the data holds. `colour_jitter` c > 0:
    brightness, contrast and saturation are each scaled by a factor drawn from [1-c, 1+c]
    (torchvision's ColorJitter without hue). Both 0: the paper's crop and flip, exactly."""
    n, size = images_uint8.shape[0], images_uint8.shape[1]
    k_y, k_x, k_flip = jax.random.split(rng, 3)
    flips = jax.random.bernoulli(k_flip, 0.5, (n,)) if flip else jnp.zeros((n,), bool)
    if scale_jitter > 0:
        images = _zoomed_crops(images_uint8, jax.random.fold_in(rng, 1), crop_size, scale_jitter)
    else:
        ys = jax.random.randint(k_y, (n,), 0, size - crop_size + 1)
        xs = jax.random.randint(k_x, (n,), 0, size - crop_size + 1)

        def one(image, y, x):
            return jax.lax.dynamic_slice(image, (y, x, 0), (crop_size, crop_size, 3))

        images = jax.vmap(one)(images_uint8, ys, xs)
    images = jnp.where(flips[:, None, None, None], images[:, :, ::-1], images)
    if colour_jitter > 0:
        unit = images.astype(input_float()) / 255.0
        unit = _colour_jitter(unit, jax.random.fold_in(rng, 2), colour_jitter)
        return (unit - IMAGENET_MEAN) / IMAGENET_STD
    return normalize(images)


@dataclasses.dataclass(frozen=True)
class Augment:
    """The training transform as one hashable value, `(images_uint8, rng) -> images` (`augment`
    with these settings): what the compiled steps of f and g take. `Augment.of(crop)` also takes a
    bare crop size, the paper's crop and flip."""

    crop_size: int
    flip: bool = True
    scale_jitter: float = 0.0
    colour_jitter: float = 0.0

    def __call__(self, images_uint8: jnp.ndarray, rng: jax.Array) -> jnp.ndarray:
        return augment(images_uint8, rng, self.crop_size, self.flip, self.scale_jitter, self.colour_jitter)

    @classmethod
    def of(cls, crop: 'int | Augment') -> 'Augment':
        return crop if isinstance(crop, Augment) else cls(int(crop))


def _zoomed_crops(images_uint8: jnp.ndarray, rng: jax.Array, crop_size: int, jitter: float) -> jnp.ndarray:
    """`(N, S, S, 3)` uint8 -> `(N, crop, crop, 3)` float pixel values (0-255): per image a square
    window of side `crop / zoom` (zoom log-uniform in [1/(1+jitter), 1+jitter], the window at
    most the image) at a uniform position, resized to `crop`."""
    n, size = images_uint8.shape[0], images_uint8.shape[1]
    k_zoom, k_y, k_x = jax.random.split(rng, 3)
    bound = jnp.log1p(jitter)
    zoom = jnp.exp(jax.random.uniform(k_zoom, (n,), minval=-bound, maxval=bound))
    side = jnp.minimum(crop_size / zoom, size)
    y0 = jax.random.uniform(k_y, (n,)) * (size - side)
    x0 = jax.random.uniform(k_x, (n,)) * (size - side)
    scale = crop_size / side

    def one(image, s, y, x):
        # Output pixel o samples the input at (o + 0.5 - t) / s - 0.5: t = -y0 * s maps the
        # window [y0, y0 + side) onto [0, crop).
        return jax.image.scale_and_translate(
            image.astype(jnp.float32),
            (crop_size, crop_size, 3),
            (0, 1),
            jnp.stack([s, s]),
            jnp.stack([-y * s, -x * s]),
            method='linear',
            antialias=True,
        )

    return jax.vmap(one)(images_uint8, scale, y0, x0)


def _colour_jitter(unit: jnp.ndarray, rng: jax.Array, jitter: float) -> jnp.ndarray:
    """Brightness, contrast and saturation of `(N, H, W, 3)` images in [0, 1], each scaled by a
    factor uniform in [1 - jitter, 1 + jitter] per image, in that order, clipped to [0, 1]."""
    n = unit.shape[0]
    b, c, s = jax.random.uniform(rng, (3, n, 1, 1, 1), minval=1 - jitter, maxval=1 + jitter)
    grey_weights = jnp.asarray([0.299, 0.587, 0.114], unit.dtype)  # ITU-R 601 luma, as PIL and torchvision
    unit = jnp.clip(unit * b, 0, 1)
    mean_grey = jnp.mean(unit @ grey_weights, axis=(1, 2))[:, None, None, None]
    unit = jnp.clip((unit - mean_grey) * c + mean_grey, 0, 1)
    grey = (unit @ grey_weights)[..., None]
    return jnp.clip((unit - grey) * s + grey, 0, 1)


ERASE_FILLS = ('mean', 'noise')


def random_erase(
    images: jnp.ndarray, rng: jax.Array, prob: float, area=(0.05, 0.4), aspect=(0.3, 3.3), fill: str = 'mean'
) -> jnp.ndarray:
    """Random erasing (Zhong et al., 2020) of normalised images `(N, H, W, 3)`: with probability
    `prob` per image, one rectangle of `area` (a share of the image) and `aspect` ratio is filled.
    `fill='mean'`: with 0, the dataset-mean colour, which is what a weight of 0 of `g` does to a
    pixel (`losses.apply_weight_map`), so f learns to answer alike on what g's zero weights make.
    `fill='noise'`: with random colours, uniform per pixel (Zhong et al.'s default): f learns to
    gather evidence past an occluder without learning that the masked grey changes nothing."""
    n, h, w = images.shape[:3]
    k_on, k_area, k_aspect, k_y, k_x = jax.random.split(rng, 5)
    on = jax.random.bernoulli(k_on, prob, (n,))
    share = jax.random.uniform(k_area, (n,), minval=area[0], maxval=area[1])
    ratio = jnp.exp(jax.random.uniform(k_aspect, (n,), minval=jnp.log(aspect[0]), maxval=jnp.log(aspect[1])))
    eh = jnp.clip(jnp.sqrt(share * h * w * ratio), 1, h)
    ew = jnp.clip(jnp.sqrt(share * h * w / ratio), 1, w)
    y0 = jax.random.uniform(k_y, (n,)) * (h - eh)
    x0 = jax.random.uniform(k_x, (n,)) * (w - ew)
    ys = jnp.arange(h)[None, :, None]
    xs = jnp.arange(w)[None, None, :]
    inside = (
        (ys >= y0[:, None, None])
        & (ys < (y0 + eh)[:, None, None])
        & (xs >= x0[:, None, None])
        & (xs < (x0 + ew)[:, None, None])
        & on[:, None, None]
    )
    if fill == 'noise':  # its own key (the rectangles are those of fill='mean')
        u = jax.random.uniform(jax.random.fold_in(rng, 7), images.shape)
        return jnp.where(inside[..., None], ((u - IMAGENET_MEAN) / IMAGENET_STD).astype(images.dtype), images)
    return jnp.where(inside[..., None], 0.0, images)


def crop_offset(size: int, crop_size: int) -> int:
    return (size - crop_size) // 2


def center_crop(images_uint8: jnp.ndarray, crop_size: int) -> jnp.ndarray:
    """Evaluation transform: centre crop and normalisation, `(N, S, S, 3)` -> `(N, c, c, 3)`."""
    o = crop_offset(images_uint8.shape[1], crop_size)
    return normalize(images_uint8[:, o : o + crop_size, o : o + crop_size])


def center_crop_boxes(boxes: np.ndarray, size: int, crop_size: int) -> np.ndarray:
    """Boxes `(N, K, 4)` in cache coordinates -> centre-crop coordinates, clipped to
    `[0, crop_size - 1]` (e.g. 256 -> 224: `x - 16`). Padding rows stay `PAD_BOX`."""
    o = crop_offset(size, crop_size)
    moved = np.clip(np.asarray(boxes) - o, 0, crop_size - 1)
    return np.where(valid_boxes(boxes)[..., None], moved, np.asarray(PAD_BOX)).astype(np.int32)


def cache_boxes(boxes: np.ndarray, sizes: np.ndarray, size: int) -> np.ndarray:
    """Boxes `(N, K, 4)` in the original images' pixels, their images' `(N, 2)` `(width, height)`
    -> `(N, K, 4)` int32 pixels of the `size x size` resized image: `round(x * size / W)`
    (`y`: `H`), clipped to `[0, size - 1]`. Padding rows stay `PAD_BOX`.

    The released code maps CUB's boxes as `x / W * 256 - 16`, clipped to `[0, 223]`, in floats;
    this is the same rule in integer pixels (rounded, then `center_crop_boxes` shifts and clips)."""
    boxes = np.asarray(boxes, np.float64)
    wh = np.asarray(sizes, np.float64)[:, None, :]
    scale = np.concatenate([size / wh, size / wh], axis=-1)  # (N, 1, 4): x0, y0, x1, y1
    scaled = np.clip(np.round(boxes * scale), 0, size - 1)
    return np.where(valid_boxes(boxes)[..., None], scaled, np.asarray(PAD_BOX)).astype(np.int32)


def crop_protocol_boxes(split: Split, rows, crop_size: int) -> np.ndarray:
    """The paper's protocol (resize to the cache size, centre crop `crop_size`): the ground-truth
    boxes `(n, K, 4)` int32 of `rows`, scaled once from the original pixels."""
    cached = cache_boxes(split.boxes[rows], split.original_sizes[rows], split.size)
    return center_crop_boxes(cached, split.size, crop_size)


def resize_masks(masks: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Masks at their original resolutions -> `(n, size, size)` uint8, each resized once with
    nearest neighbours (OpenCV's INTER_NEAREST, as wsolevaluation's `load_mask_image`). No masks
    give `(0, size, size)`: a host's share of the last evaluation batch can be only padding."""
    if len(masks) == 0:
        return np.zeros((0, size, size), np.uint8)
    return np.stack(
        [
            m
            if m.shape == (size, size)
            else cv2.resize(np.asarray(m, np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
            for m in masks
        ]
    )


def center_crop_masks(masks: np.ndarray, crop_size: int) -> np.ndarray:
    o = crop_offset(masks.shape[1], crop_size)
    return masks[:, o : o + crop_size, o : o + crop_size]


def crop_protocol_masks(masks: Sequence[np.ndarray], size: int, crop_size: int) -> np.ndarray:
    """The paper's protocol for original-resolution masks: resized once to the cache size `size`,
    then the centre crop, `(n, crop_size, crop_size)`."""
    return center_crop_masks(resize_masks(masks, size), crop_size)


def epoch_permutation(key: jax.Array, n: int) -> np.ndarray:
    """The order of the training examples for one epoch, from an explicit PRNG key."""
    return np.asarray(jax.random.permutation(key, n))


def train_batches(n: int, batch_size: int, key: jax.Array) -> Iterator[np.ndarray]:
    """Index batches of a shuffled epoch; the incomplete last batch is dropped."""
    order = epoch_permutation(key, n)
    for start in range(0, n - batch_size + 1, batch_size):
        yield order[start : start + batch_size]


def eval_batches(n: int, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """`(indices, n_valid)` in order; the last batch is padded (repeating index 0) to full size
    so that every compiled evaluation step sees one shape."""
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        n_valid = len(idx)
        yield np.concatenate([idx, np.zeros(batch_size - n_valid, idx.dtype)]), n_valid


def steps_per_epoch(n: int, batch_size: int) -> int:
    return n // batch_size


def host_rng(key: jax.Array) -> np.random.Generator:
    """A numpy generator seeded from a JAX key, for host-side sampling (triplets)."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def _class_blocks(labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Examples grouped by class without a per-class copy: `order` `(N,)` sorts them by label,
    class `c` of `classes` fills `order[starts[c]:starts[c] + counts[c]]`, and `slot` `(N,)` is
    each example's position in `order`."""
    order = np.argsort(labels, kind='stable')
    classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    slot = np.empty(len(labels), np.int64)
    slot[order] = np.arange(len(labels))
    return order, classes, starts, counts, slot


def triplet_indices(labels: np.ndarray, anchors: np.ndarray, key: jax.Array) -> np.ndarray:
    """`(B, 3)` indices (anchor, positive, negative) for `(B,)` anchors into `(N,)` labels: for each
    anchor, a uniformly random other example of the same class and a uniformly random example of
    another class (Method II, Eq. 2-4). An anchor whose class has a single example is its own
    positive (the triplet then only pushes the negative away). Both draws pick an index in the
    class's block of the label-sorted order, or in its complement, in one step: no rejection
    loop, so no class can make sampling spin."""
    rng = host_rng(key)
    labels = np.asarray(labels)
    anchors = np.asarray(anchors, np.int64)
    order, classes, starts, counts, slot = _class_blocks(labels)
    if len(classes) < 2:
        raise DataError(
            'triplets (Method II) need at least two classes in the training split, found '
            f'{len(classes)}; check the labels or use method1'
        )
    c = np.searchsorted(classes, labels[anchors])
    start, count = starts[c], counts[c]
    # Positive: one of the count - 1 other slots of the block (the anchor's own slot skipped).
    r = start + rng.integers(0, np.maximum(count - 1, 1))
    r = np.where(r >= slot[anchors], r + 1, r)
    positive = np.where(count > 1, order[np.minimum(r, len(labels) - 1)], anchors)
    # Negative: one of the n - count slots outside the block.
    r = rng.integers(0, len(labels) - count)
    negative = order[np.where(r >= start, r + count, r)]
    return np.stack([anchors, positive, negative], axis=1)
