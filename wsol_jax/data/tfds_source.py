"""TensorFlow Datasets builders read from a local `data_dir` (no download at run time).

Supported: `caltech_birds2011` (boxes and segmentation masks), `cars196` (boxes),
`oxford_flowers102` (labels only: TFDS does not ship its masks; use the original layout,
`data.source='flowers'`, to evaluate). TFDS boxes are `(ymin, xmin, ymax, xmax)` normalised to
[0, 1]; they become `[x0, y0, x1, y1]` pixels here. TensorFlow is imported only in this module,
only when this source is used, and is hidden from the GPUs (JAX owns them).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os

import cv2
import numpy as np
from tqdm import tqdm

from wsol_jax.data.dataset import Split, holdout_indices
from wsol_jax.data import decode, records
from wsol_jax.data.images import resize_image
from wsol_jax.errors import ConfigError, DataError

SUPPORTED = ('caltech_birds2011', 'cars196', 'oxford_flowers102')


def _import():
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(
            'data.source=tfds needs tensorflow-cpu and tensorflow-datasets: pip install -r requirements-dev.txt'
        ) from None
    tf.config.set_visible_devices([], 'GPU')
    return tfds


def _pixel_boxes(bbox, height: int, width: int) -> np.ndarray:
    """TFDS `(K, 4)` or `(4,)` `(ymin, xmin, ymax, xmax)` in [0, 1] -> `(K, 4)` `[x0, y0, x1, y1]`."""
    b = np.asarray(bbox, np.float64).reshape(-1, 4)
    return np.stack([b[:, 1] * width, b[:, 0] * height, b[:, 3] * width, b[:, 2] * height], axis=1)


def example_to_sample(example: dict, size: int):
    """One TFDS example (numpy) -> `(image resized to (size, size, 3), boxes (K, 4) float and mask
    (H, W) in the original image's pixels, (W, H))`."""
    image = example['image']
    h, w = image.shape[:2]
    boxes = _pixel_boxes(example['bbox'], h, w) if 'bbox' in example else np.zeros((0, 4))
    mask = None
    if 'segmentation_mask' in example:
        m = np.asarray(example['segmentation_mask'])[..., 0]
        mask = (m > (127 if m.max() > 1 else 0)).astype(np.uint8)
        if mask.shape != (h, w):  # kept at the image's pixels, as its boxes (TFDS' mock data differ in size)
            mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    return resize_image(image, size), boxes, mask, (w, h)


def _files_key(name: str, split: str, data_dir: str, size: int, codec: str) -> str:
    """What a cached TFDS split depends on: the builder's prepared files (names, sizes, times)."""
    h = hashlib.sha1(json.dumps([decode.FORMAT_VERSION, name, split, size, codec]).encode())
    for path in sorted(glob.glob(os.path.join(data_dir, name, '**', '*'), recursive=True)):
        st = os.stat(path)
        h.update(json.dumps([os.path.relpath(path, data_dir), st.st_size, st.st_mtime_ns]).encode())
    return h.hexdigest()[:16]


def read_split(tfds, name: str, split: str, data_dir: str, size: int, cache_dir: str, codec: str = 'raw') -> Split:
    """One TFDS split, written once to the record cache (`records.py`) and read from there."""
    try:
        ds = tfds.load(name, split=split, data_dir=data_dir, download=False, shuffle_files=False)
    except Exception as e:  # TFDS raises several types for a missing or unprepared dataset
        raise DataError(
            f'cannot read TFDS {name}[{split}] from data_dir={data_dir}: {str(e).splitlines()[0]} '
            f'(prepare it where there is network: tfds build {name} --data_dir={data_dir})'
        ) from None

    def build(writer) -> list[str]:
        for i, example in enumerate(tqdm(tfds.as_numpy(ds), desc=f'{name}[{split}]', leave=False)):
            image, boxes, mask, original_size = example_to_sample(example, size)
            writer.add(image, int(example['label']), f'{name}/{split}/{i}', boxes, mask, original_size)
        if not len(writer):
            raise DataError(f'TFDS {name}[{split}] in {data_dir} is empty')
        return []

    folder = os.path.join(cache_dir, f'tfds-{name}-{split}-{_files_key(name, split, data_dir, size, codec)}')
    return records.cached(folder, size, build, codec)


def load(cfg, seed: int, cache_dir: str) -> tuple[dict[str, Split], int]:
    """`({'train', 'val', 'test'}, num_classes)`; 'val' is a hold-out of train unless
    `data.val_split='val'` and the builder has a validation split."""
    if cfg.tfds_name not in SUPPORTED:
        raise ConfigError(f'config.data.tfds_name must be one of {SUPPORTED}, got {cfg.tfds_name!r}')
    tfds = _import()
    data_dir = os.path.abspath(cfg.root)
    read = lambda split: read_split(tfds, cfg.tfds_name, split, data_dir, cfg.image_size, cache_dir, cfg.cache_codec)
    train, test = read('train'), read('test')
    if cfg.val_split == 'val':
        val = read('validation')
    else:
        keep, held = holdout_indices(len(train), cfg.num_val, seed)
        train, val = train.subset(keep), train.subset(held)
    num_classes = cfg.num_classes or int(max(train.labels.max(), test.labels.max()) + 1)
    return {'train': train, 'val': val, 'test': test}, num_classes
