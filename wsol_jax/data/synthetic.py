"""A synthetic weakly-supervised localization benchmark, generated deterministically from a seed.

It reproduces the fine-grained situation the paper is about:
  * every object is a large striped "body" (an ellipse of random size, aspect, angle and
    position); classes come in pairs ("genera") whose bodies share a colour, so the body tells
    the genus but never the class;
  * the two classes of a genus differ only in small discriminative "parts" on the body (one of
    two kinds, each with its own colour and shape, the same two kinds in every genus), so a
    part plus a glimpse of the body colour around it decide the class: a classifier can be
    right while looking at a fraction of the object, and its CAM tends to light up a part;
  * `num_parts` copies of the part sit apart on the body, as a bird's discriminative head,
    wing bars and tail do: a map that shrinks to what discriminates (the over-localisation of
    Section 3, "Early stopping") breaks into separate blobs, and the largest one's box leaves
    weight out, which is what the containment score S detects;
  * backgrounds are cluttered (smooth colour noise plus fine noise) and hold distractor shapes
    that carry no part;
  * `body_class_signal` in [0, 1] scales how strongly the body colour differs between genera
    (0: one body colour for all classes, the part is then the only cue).
Each image has a label, a GT box (the body's bounding rectangle, `[x, y, x + w, y + h]` as
`boxes_from_maps` returns) and a GT foreground mask. Training uses labels only.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Iterator

import cv2
import numpy as np
from tqdm import tqdm

from wsol_jax.data import decode, records
from wsol_jax.data.dataset import Dataset, Split
from wsol_jax.errors import ConfigError

# The two kinds of discriminative part: class = 2 * genus + part kind.
PART_COLORS = np.array([(235, 30, 30), (245, 235, 40)], np.float32)
PART_SHAPES = ('disc', 'triangle')
# Saturated body colours, one per genus (pair of classes), far from the ImageNet mean colour so
# that masking the body (which turns it into the mean colour) changes the image.
GENUS_COLORS = np.array([(200, 120, 40), (40, 160, 150), (150, 60, 170), (60, 90, 200)], np.float32)
NEUTRAL_BODY = np.array([170, 150, 60], np.float32)
SPLIT_IDS = {'train': 0, 'val': 1, 'test': 2}


def _draw_shape(canvas: np.ndarray, shape: str, cx: float, cy: float, r: float, color) -> None:
    color = tuple(float(c) for c in color)
    if shape == 'disc':
        cv2.circle(canvas, (int(cx), int(cy)), max(1, int(r)), color, -1, cv2.LINE_AA)
    elif shape == 'square':
        cv2.rectangle(canvas, (int(cx - r), int(cy - r)), (int(cx + r), int(cy + r)), color, -1)
    else:
        pts = np.array([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], np.int32)
        cv2.fillPoly(canvas, [pts], color, cv2.LINE_AA)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    coarse = rng.uniform(40, 200, (4, 4, 3)).astype(np.float32)
    image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return image + rng.normal(0, 12, (size, size, 3)).astype(np.float32)


def _distractors(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    size = image.shape[0]
    for _ in range(count):
        color = rng.uniform(30, 230, 3)
        cx, cy = rng.uniform(0, size, 2)
        r = rng.uniform(0.06, 0.16) * size
        if rng.random() < 0.5:
            cv2.rectangle(
                image,
                (int(cx - r), int(cy - r * 0.6)),
                (int(cx + r), int(cy + r * 0.6)),
                tuple(float(c) for c in color),
                -1,
            )
        else:
            _draw_shape(image, 'triangle', cx, cy, r, color)


def _body(rng, size, min_scale, max_scale):
    """A random ellipse fully inside the image: centre, axes, angle."""
    while True:
        axes = rng.uniform(min_scale, max_scale, 2) * size / 2
        angle = rng.uniform(0, 180)
        cx, cy = rng.uniform(0, size, 2)
        mask = np.zeros((size, size), np.uint8)
        cv2.ellipse(mask, ((cx, cy), (2 * axes[0], 2 * axes[1]), angle), 1, -1)
        x, y, w, h = cv2.boundingRect(mask)
        if x > 0 and y > 0 and x + w < size and y + h < size and mask.sum() > 0:
            return (cx, cy), axes, angle, mask


def _spread_points(rng: np.random.Generator, candidates: np.ndarray, n: int) -> np.ndarray:
    """`n` of the `(M, 2)` candidate points, apart from each other: the first at random, each
    next one at random among the quarter of the candidates farthest from those already chosen."""
    chosen = [candidates[rng.integers(len(candidates))]]
    for _ in range(n - 1):
        distance = np.min([np.hypot(*(candidates - c).T) for c in chosen], axis=0)
        far = np.flatnonzero(distance >= np.quantile(distance, 0.75))
        chosen.append(candidates[far[rng.integers(len(far))]])
    return np.asarray(chosen)


def make_image(
    rng: np.random.Generator,
    label: int,
    size: int,
    *,
    num_distractors: int = 3,
    min_scale: float = 0.35,
    max_scale: float = 0.8,
    part_scale: float = 0.12,
    body_class_signal: float = 0.0,
    num_parts: int = 1,
):
    """One image: `(image (S, S, 3) uint8, box (4,) int, mask (S, S) uint8)`."""
    image = _background(rng, size)
    _distractors(rng, image, rng.integers(1, num_distractors + 1) if num_distractors else 0)
    (cx, cy), axes, angle, mask = _body(rng, size, min_scale, max_scale)
    # The body: the genus colour (label // 2) with dark stripes across it.
    genus = GENUS_COLORS[(label // 2) % len(GENUS_COLORS)]
    base = NEUTRAL_BODY + body_class_signal * (genus - NEUTRAL_BODY) + rng.normal(0, 8, 3)
    yy, xx = np.mgrid[:size, :size]
    theta = np.deg2rad(angle)
    phase = (xx * np.cos(theta) + yy * np.sin(theta)) * (2 * np.pi / max(4, axes.min() / 2))
    body = base[None, None] * (0.75 + 0.25 * np.sin(phase))[..., None]
    image = np.where(mask[..., None] > 0, body, image)
    outline = np.zeros((size, size), np.uint8)
    cv2.ellipse(outline, ((cx, cy), (2 * axes[0], 2 * axes[1]), angle), 1, max(1, size // 64))
    image[outline > 0] = (30, 30, 40)
    # The discriminative parts: small shapes of the class's colour, spread over the body.
    r_part = max(2.0, part_scale * axes.min() * 2 / 2)
    inner = np.argwhere(cv2.erode(mask, np.ones((3, 3), np.uint8), iterations=int(r_part) + 1) > 0)
    if len(inner) == 0:
        inner = np.argwhere(mask > 0)
    for py, px in _spread_points(rng, inner, num_parts):
        _draw_shape(image, PART_SHAPES[label % 2], px, py, r_part, PART_COLORS[label % 2])
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    x, y, w, h = cv2.boundingRect(mask)
    return image, np.array([x, y, x + w, y + h], np.int32), mask


def _check_split(split: str, n: int, num_classes: int) -> None:
    if not 2 <= num_classes <= 2 * len(GENUS_COLORS):
        raise ConfigError(
            f'config.data.num_classes: the synthetic benchmark has 2 to {2 * len(GENUS_COLORS)} classes, '
            f'got {num_classes}'
        )
    if n < 1:
        raise ConfigError(f'config.data.num_{split} must be at least 1 (the synthetic {split} split), got {n}')


def generate(seed: int, split: str, n: int, size: int, num_classes: int, **kwargs) -> Iterator[tuple]:
    """`n` samples `(image, box (1, 4), mask, label, name)` of a split, one at a time,
    deterministic in `(seed, split)`; classes are balanced."""
    _check_split(split, n, num_classes)
    rng = np.random.default_rng([seed, SPLIT_IDS[split]])
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int32)
    for i, c in enumerate(labels):
        image, box, mask = make_image(rng, int(c), size, **kwargs)
        yield image, box[None], mask, int(c), f'{split}_{i:05d}'


def make_split(seed: int, split: str, n: int, size: int, num_classes: int, **kwargs) -> Split:
    """`generate`'s samples as an in-memory `Split` (for library use and tests)."""
    images, boxes, masks, labels, names = zip(*generate(seed, split, n, size, num_classes, **kwargs))
    return Split(np.stack(images), np.asarray(labels, np.int32), np.stack(boxes), np.stack(masks), list(names))


def _cache_key(seed: int, split: str, n: int, size: int, num_classes: int, codec: str, kwargs: dict) -> str:
    """Everything a cached synthetic split depends on, this module's code included (a changed
    generator never reads an old cache back)."""
    with open(__file__, 'rb') as fh:
        h = hashlib.sha1(fh.read())
    h.update(
        json.dumps([decode.FORMAT_VERSION, seed, split, n, size, num_classes, codec, sorted(kwargs.items())]).encode()
    )
    return h.hexdigest()[:16]


GENERATOR_KEYS = ('num_distractors', 'min_scale', 'max_scale', 'part_scale', 'body_class_signal', 'num_parts')


def check_config(cfg) -> None:
    """`ConfigError` naming the key for a `config.data` block the generator cannot use: a missing
    key (another dataset's config with `source=synthetic`), split sizes below 1, a class count
    outside 2..8. Generates nothing."""
    for key in ('num_train', 'num_val', 'num_test') + GENERATOR_KEYS:
        if cfg.get(key) is None:
            raise ConfigError(
                f'config.data.{key} is missing: data.source=synthetic needs the keys of '
                'configs/synthetic.py (use --config=configs/synthetic.py:method1)'
            )
    for split in SPLIT_IDS:
        n = cfg.get(f'num_{split}')
        if n < 1:
            raise ConfigError(
                f'config.data.num_{split} must be at least 1 (the size of the synthetic {split} split), got {n}'
            )
    if not 2 <= cfg.num_classes <= 2 * len(GENUS_COLORS):
        raise ConfigError(
            f'config.data.num_classes: the synthetic benchmark has 2 to {2 * len(GENUS_COLORS)} '
            f'classes, got {cfg.num_classes}'
        )
    if cfg.num_parts < 1:
        raise ConfigError(f'config.data.num_parts must be at least 1, got {cfg.num_parts}')
    if not 0 < cfg.min_scale <= cfg.max_scale < 1:
        raise ConfigError(
            f'config.data.min_scale and max_scale must satisfy 0 < min_scale <= max_scale < 1, got '
            f'{cfg.min_scale} and {cfg.max_scale}'
        )


def load(cfg, seed: int, cache_dir: str) -> Dataset:
    """The synthetic dataset for a `config.data` block (`num_train`, `num_val`, `num_test`,
    `image_size`, `num_classes` and the generator's options), generated once into the record
    cache in `cache_dir` (`records.py`) and read from there, as every other data set."""
    check_config(cfg)
    kwargs = {key: cfg[key] for key in GENERATOR_KEYS}
    splits = {}
    for name in SPLIT_IDS:
        n = getattr(cfg, f'num_{name}')
        args = (seed, name, n, cfg.image_size, cfg.num_classes)

        def build(writer, args=args, n=n, name=name) -> list[str]:
            for image, box, mask, label, image_name in tqdm(
                generate(*args, **kwargs), total=n, desc=f'synthetic {name}', leave=False, disable=None
            ):
                writer.add(image, label, image_name, box, mask)
            return []

        key = _cache_key(*args, cfg.cache_codec, kwargs)
        splits[name] = records.cached(
            os.path.join(cache_dir, f'synthetic-{name}-{key}'), cfg.image_size, build, cfg.cache_codec
        )
    names = [f'genus{c // 2}-{PART_SHAPES[c % 2]}' for c in range(cfg.num_classes)]
    return Dataset(num_classes=cfg.num_classes, class_names=names, **splits)
