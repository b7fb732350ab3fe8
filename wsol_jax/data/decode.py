"""Decode-once: images and masks from disk -> resized uint8 arrays, with clear errors.

Every dataset format produces a list of `Record`s (an image path, a label, boxes in original
pixels, an optional mask); `build_split` decodes them in parallel threads (OpenCV releases the
GIL), resizes to the cache size (the paper's 256x256, aspect ratio not kept) and scales the boxes
to match. `cached_split` stores the result as an `.npz` so that a later run skips decoding.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
from typing import Optional, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from wsol_jax.data.dataset import Split
from wsol_jax.errors import DataError
from wsol_jax.metrics import PAD_BOX

MASK_KINDS = ('binary', 'flowers')


@dataclasses.dataclass
class Record:
    """One annotated image. `boxes` `(K, 4)` float `[x0, y0, x1, y1]` in original pixels (K may
    be 0); `mask_path` a mask image (`mask_kind` 'binary': > 127 is object; 'flowers': Oxford
    Flowers 102 segmentation images, pure blue is background); `source` names the annotation
    file and line, for error messages."""
    path: str
    label: int
    boxes: np.ndarray
    mask_path: Optional[str] = None
    mask_kind: str = 'binary'
    source: str = ''
    boxes_from_mask: bool = False


def _imread(path: str, what: str, source: str) -> np.ndarray:
    """BGR uint8 `(H, W, 3)`; raises `DataError` naming the file (and annotation line)."""
    where = f' (listed in {source})' if source else ''
    if not os.path.isfile(path):
        raise DataError(f'{what} file not found: {path}{where}')
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f'cannot decode {what} {path}{where}: the file is corrupt or not an image')
    return image


def read_image(path: str, source: str = '') -> np.ndarray:
    """RGB uint8 `(H, W, 3)`."""
    return cv2.cvtColor(_imread(path, 'image', source), cv2.COLOR_BGR2RGB)


def read_mask(path: str, kind: str, source: str = '') -> np.ndarray:
    """uint8 `(H, W)` with 1 = object."""
    image = _imread(path, 'mask', source)
    if kind == 'flowers':
        b, g, r = image[..., 0].astype(int), image[..., 1].astype(int), image[..., 2].astype(int)
        background = (b > 200) & (g < 50) & (r < 50)   # (0, 0, 254) in RGB, JPEG-tolerant
        return (~background).astype(np.uint8)
    return (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) > 127).astype(np.uint8)


def resize_sample(image: np.ndarray, boxes, mask: Optional[np.ndarray], size: int, boxes_from_mask: bool = False):
    """Resize an RGB image `(H, W, 3)` to `(size, size)` (the paper's 256x256, aspect ratio not
    kept), scale its `(K, 4)` boxes `[x0, y0, x1, y1]` by `size / W`, `size / H`, and resize its
    mask with nearest neighbours. `boxes_from_mask`: the box is the mask's bounding rectangle."""
    h, w = image.shape[:2]
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) * np.array([size / w, size / h] * 2)
    boxes = np.clip(np.round(boxes), 0, size - 1).astype(np.int32)
    if mask is not None:
        mask = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
        if boxes_from_mask and mask.any():
            x, y, bw, bh = cv2.boundingRect(mask)
            boxes = np.array([[x, y, x + bw, y + bh]], np.int32)
    return resized, boxes, mask


def _decode(record: Record, size: int):
    image = read_image(record.path, record.source)
    mask = None
    if record.mask_path:
        mask = read_mask(record.mask_path, record.mask_kind, record.source)
        if mask.shape != image.shape[:2]:
            raise DataError(f'mask {record.mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image '
                            f'{record.path} is {image.shape[1]}x{image.shape[0]}')
    return resize_sample(image, record.boxes, mask, size, record.boxes_from_mask)


def build_split(records: Sequence[Record], size: int, num_classes: int, on_bad_sample: str = 'error',
                desc: str = 'decode', workers: int = 8) -> Split:
    """Decode `records` into a `Split` of `(N, size, size, 3)` uint8 images.

    `on_bad_sample`: 'error' stops at the first missing or corrupt file with its name; 'skip'
    drops such samples and prints how many were skipped.
    """
    if not records:
        raise DataError(f'{desc}: the split is empty; check the dataset root and split files')
    for r in records:
        if not 0 <= r.label < num_classes:
            raise DataError(f'label {r.label} (0-based) of {r.path} ({r.source}) is outside [0, {num_classes}); '
                            'check the annotations and config.data.num_classes')
    samples, kept = [], []
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(_decode, r, size) for r in records]
        for r, fut in tqdm(zip(records, futures), total=len(records), desc=desc, leave=False):
            try:
                samples.append(fut.result())
            except DataError as e:
                if on_bad_sample != 'skip':
                    raise
                print(f'[data] skipped: {e}')
                continue
            kept.append(r)
    if len(kept) < len(records):
        print(f'[data] {desc}: skipped {len(records) - len(kept)} of {len(records)} samples')
    if not kept:
        raise DataError(f'{desc}: every sample was unreadable')
    return stack_samples(samples, [r.label for r in kept], [r.path for r in kept])


def stack_samples(samples, labels, names) -> Split:
    """`[(image, boxes (K_i, 4), mask or None)]` -> a `Split`, boxes padded with `PAD_BOX`."""
    images, boxes, masks = zip(*samples)
    k = max(1, max(len(b) for b in boxes))
    padded = np.full((len(images), k, 4), PAD_BOX, np.int32)
    for i, b in enumerate(boxes):
        padded[i, :len(b)] = b
    has_boxes = any(len(b) for b in boxes)
    has_masks = all(m is not None for m in masks)
    return Split(np.stack(images), np.asarray(labels, np.int32), padded if has_boxes else None,
                 np.stack(masks) if has_masks else None, list(names))


def _fingerprint(records: Sequence[Record], size: int) -> str:
    h = hashlib.sha1(f'{size}'.encode())
    for r in records:
        h.update(json.dumps([r.path, r.label, np.asarray(r.boxes).tolist(), r.mask_path]).encode())
    return h.hexdigest()[:16]


def cached_split(cache_dir: Optional[str], name: str, records: Sequence[Record], size: int,
                 num_classes: int, on_bad_sample: str = 'error') -> Split:
    """`build_split`, stored in `cache_dir/<name>-<fingerprint>.npz` and read back next time."""
    if not cache_dir:
        return build_split(records, size, num_classes, on_bad_sample, desc=name)
    path = os.path.join(cache_dir, f'{name}-{_fingerprint(records, size)}.npz')
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as z:
            return Split(z['images'], z['labels'], z['boxes'] if 'boxes' in z else None,
                         z['masks'] if 'masks' in z else None, list(z['names']))
    split = build_split(records, size, num_classes, on_bad_sample, desc=name)
    os.makedirs(cache_dir, exist_ok=True)
    arrays = {'images': split.images, 'labels': split.labels, 'names': np.array(split.names)}
    if split.boxes is not None:
        arrays['boxes'] = split.boxes
    if split.masks is not None:
        arrays['masks'] = split.masks
    tmp = path + f'.tmp{os.getpid()}.npz'
    np.savez(tmp, **arrays)
    os.replace(tmp, path)   # atomic: an interrupted run never leaves a half-written cache
    return split
