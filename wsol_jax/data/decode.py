"""Decode-once: images and masks from disk -> resized uint8 images and original ground truth, with clear errors.

Every dataset format produces a list of `Record`s (an image path, its id, a label, boxes in
original pixels, an optional mask); `decode_into` decodes them in parallel threads, checks the
boxes against the decoded image and resizes the image to the cache size (the paper's 256x256,
aspect ratio not kept). The ground truth stays in the original image's pixels (boxes as floats,
the mask at its own resolution, the image's `(width, height)`): each evaluation protocol scales
it once (`dataset.py`, `wsolevaluation.py`). `cached_split` writes the result to the on-disk
record cache (`records.py`) once; its key covers everything the content depends on, files'
sizes and times included.

Files are read by `images.py` (strictly, every mode to 8-bit RGB, EXIF orientation as the
protocols do).
"""

from __future__ import annotations

import collections
import contextlib
import concurrent.futures
import dataclasses
import hashlib
import json
import os
from typing import Optional, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from wsol_jax.data import records as records_lib
from wsol_jax.data.dataset import Split
from wsol_jax.data.images import SKIP_HINT, listed_in, read_image, read_mask, resize_image
from wsol_jax.errors import DataError
from wsol_jax.annotations import IGNORE

# Part of the cache key: bump it whenever decoding, checks or the cache layout change, so that
# caches written by an older version are not read back.
FORMAT_VERSION = 6  # 3: Pillow bilinear resize; 4: ArrayRecord cache (records.py); 5: to_uint8, EXIF by listed
# size; 6: original ground truth, the dataset's own image ids
# Boxes may exceed the image by this many pixels (inclusive pixel conventions: CUB's x + w == W,
# Stanford Cars' 1-based inclusive x2 == W); they are clipped. Anything further is an error.
BOX_TOLERANCE = 1.0
# How many skipped samples are printed one by one before only the count is reported.
MAX_SKIPS_SHOWN = 10


@dataclasses.dataclass
class Record:
    """One annotated image. `boxes` `(K, 4)` float `[x0, y0, x1, y1]` in original pixels (K may
    be 0); `mask_path` a mask image (`mask_kind` 'binary': > 127 is object, or 1 for a 0/1 mask;
    'nonzero': any non-zero grey value is object, wsolevaluation's `mask > 0.5`; 'flowers':
    Oxford Flowers 102 segmentation images, pure blue is background) and
    `extra_mask_paths` more masks of the same image, united with it (wsolevaluation lists one
    line per object mask); `source` names the annotation file and line, for error messages, and
    `box_sources` the line of each box and `label_source` that of the label where they differ.
    `size` `(width, height)` is the size the annotations list (wsolevaluation's image_sizes.txt,
    at `size_source`): the decoded image must match it. `error`: a per-sample annotation problem
    found while reading (an unparseable box), raised, or skipped with `on_bad_sample='skip'`,
    when the sample is decoded.
    `image_id`: the source's own name of the image (wsolevaluation's image_ids.txt entry, CUB's
    images.txt path, ...; default: `path`), the name of its scoremap for wsolevaluation."""

    path: str
    label: int
    boxes: np.ndarray
    mask_path: Optional[str] = None
    mask_kind: str = 'binary'
    source: str = ''
    boxes_from_mask: bool = False
    box_sources: tuple = ()
    size: Optional[tuple] = None
    size_source: str = ''
    extra_mask_paths: tuple = ()
    error: str = ''
    label_source: str = ''
    ignore_mask_paths: tuple = ()  # regions PxAP skips (OpenImages), stored as annotations.IGNORE
    image_id: str = ''

    def box_source(self, k: int) -> str:
        """The annotation line of box `k`."""
        return self.box_sources[k] if k < len(self.box_sources) else self.source

    @property
    def label_where(self) -> str:
        """The annotation line of the label."""
        return self.label_source or self.source

    @property
    def name(self) -> str:
        """The image id (`image_id`, or the path where the source gives none)."""
        return self.image_id or self.path


def check_boxes(boxes, width: int, height: int, where: Sequence[str], path: str) -> np.ndarray:
    """Boxes `(K, 4)` `[x0, y0, x1, y1]` in pixels of a `width x height` image -> the same,
    clipped to `[0, width] x [0, height]`. As wsolevaluation's `check_box_convention`, plus the
    image's extent: a box that is not finite, inverted (x0 > x1 or y0 > y1) or outside the image
    by more than `BOX_TOLERANCE` pixels raises `DataError` naming `where[k]` (its annotation
    line; the last entry serves for further boxes) and `path`."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    tol = BOX_TOLERANCE
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        if not np.isfinite([x0, y0, x1, y1]).all():
            problem = 'not finite'
        elif x0 > x1 or y0 > y1:
            problem = 'inverted (x0 > x1 or y0 > y1)'
        elif min(x0, y0) < -tol or x1 > width + tol or y1 > height + tol:
            problem = 'outside the image'
        else:
            continue
        box = ', '.join(f'{v:g}' for v in (x0, y0, x1, y1))
        raise DataError(
            f'{where[min(k, len(where) - 1)] if where else path}: box [x0, y0, x1, y1] = [{box}] of '
            f'{path} is {problem} (the image is {width}x{height}); fix the annotation, {SKIP_HINT}'
        )
    return np.clip(boxes, 0, [width, height, width, height])


def mask_box(mask: np.ndarray) -> np.ndarray:
    """The bounding rectangle of a mask's object pixels (== 1), `(1, 4)` float
    `[x, y, x + w, y + h]` (cv2.boundingRect), or `(0, 4)` if it has none."""
    if not (mask == 1).any():
        return np.zeros((0, 4))
    x, y, w, h = cv2.boundingRect((mask == 1).astype(np.uint8))
    return np.array([[x, y, x + w, y + h]], np.float64)


def _read_record_mask(record: Record, image_shape) -> Optional[np.ndarray]:
    """The record's mask(s) united, `(H, W)` uint8, checked against the image's `(H, W)`."""
    mask = None
    for path in ((record.mask_path,) if record.mask_path else ()) + tuple(record.extra_mask_paths):
        m = read_mask(path, record.mask_kind, record.source)
        if m.shape != tuple(image_shape):
            raise DataError(
                f'mask {path}{listed_in(record.source)} is {m.shape[1]}x{m.shape[0]} but its image '
                f'{record.path} is {image_shape[1]}x{image_shape[0]}; fix the mask, {SKIP_HINT}'
            )
        mask = m if mask is None else mask | m
    for path in record.ignore_mask_paths:  # wsolevaluation's layout only: read by its rule, non-zero is ignored
        ignore = read_mask(path, 'nonzero', record.source)
        if ignore.shape != tuple(image_shape):
            raise DataError(
                f'ignore mask {path}{listed_in(record.source)} is {ignore.shape[1]}x{ignore.shape[0]} but its '
                f'image {record.path} is {image_shape[1]}x{image_shape[0]}; fix the mask, {SKIP_HINT}'
            )
        if mask is None:
            mask = np.zeros(tuple(image_shape), np.uint8)
        # wsolevaluation: ignored = inside an ignore box and not part of an object
        mask = np.where((ignore > 0) & (mask == 0), IGNORE, mask).astype(np.uint8)
    return mask


def _decode(record: Record, size: int):
    """One record -> `(image (S, S, 3) uint8, boxes (K, 4) float64 in original pixels, clipped to
    the image, mask (H, W) uint8 or None, (W, H))`."""
    if record.error:
        raise DataError(record.error)
    image = read_image(record.path, record.source, listed_size=record.size)
    h, w = image.shape[:2]
    if record.size is not None and tuple(record.size) != (w, h):
        listed = 'x'.join(map(str, record.size))
        raise DataError(
            f'{record.size_source or record.source}: lists {record.path} as {listed} but the file is '
            f'{w}x{h}, so its boxes would be misplaced; fix the size or the image, {SKIP_HINT}'
        )
    boxes = check_boxes(
        record.boxes, w, h, [record.box_source(k) for k in range(len(record.boxes))] or [record.source], record.path
    )
    mask = _read_record_mask(record, (h, w))
    if record.boxes_from_mask and mask is not None and (mask == 1).any():
        boxes = mask_box(mask)
    return resize_image(image, size), boxes, mask, (w, h)


def _check_labels(records: Sequence[Record], num_classes: int) -> None:
    for r in records:
        if not 0 <= r.label < num_classes:
            raise DataError(
                f'{r.label_where}: label {r.label} (0-based) of {r.path} is outside [0, {num_classes}); '
                'check the annotations and config.data.num_classes'
            )


def ordered_results(pool: concurrent.futures.Executor, fn, items, window: int):
    """`fn(item)` for every item, submitted to `pool` and yielded in order as futures; at most
    `window` are in flight, so memory does not grow with the number of items. Closing the
    generator (an error downstream) cancels those not started.

    The caller owns `pool` and closes this generator (`contextlib.closing`): a generator that
    owned the pool would shut it down, joining its threads, wherever the garbage collector
    happened to finalise it, and inside `threading`'s own bookkeeping that join deadlocks
    (seen in CI after an error had left one unclosed).
    """
    pending = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft()
        while pending:
            yield pending.popleft()
    finally:
        for fut in pending:  # stopped early (an error): do not decode the rest
            fut.cancel()


def decode_into(
    writer,
    records: Sequence[Record],
    size: int,
    num_classes: int,
    on_bad_sample: str = 'error',
    desc: str = 'decode',
    workers: int = 8,
) -> list[str]:
    """Decode `records` in parallel threads into `writer` (a `records.SplitWriter`) in order;
    returns the reason of each skipped sample.

    `on_bad_sample`: 'error' stops at the first bad sample (a missing, truncated or corrupt
    image or mask, a box outside its image or inverted, an image whose size differs from the
    listed one) with its file and annotation line; 'skip' drops such samples and prints how many
    were skipped. A label outside `[0, num_classes)` is an error in both modes.
    """
    if not records:
        raise DataError(f'{desc}: the split is empty; check the dataset root and split files')
    _check_labels(records, num_classes)
    skipped = []
    with (
        concurrent.futures.ThreadPoolExecutor(workers) as pool,
        contextlib.closing(ordered_results(pool, lambda r: _decode(r, size), records, 4 * workers)) as futures,
    ):
        for r, fut in tqdm(zip(records, futures), total=len(records), desc=desc, leave=False):
            try:
                image, boxes, mask, original_size = fut.result()
            except DataError as e:
                if on_bad_sample != 'skip':
                    raise
                if len(skipped) < MAX_SKIPS_SHOWN:
                    print(f'[data] skipped: {e}')
                skipped.append(str(e))
                continue
            writer.add(image, r.label, r.name, boxes, mask, original_size)
    if skipped:
        print(f'[data] {desc}: skipped {len(skipped)} of {len(records)} samples (on_bad_sample=skip)')
    if not len(writer):
        raise DataError(f'{desc}: every sample was unreadable (first: {skipped[0]})')
    return skipped


def _file_state(path: Optional[str]):
    """What a cache depends on of one file: `[size, mtime in ns]`, or a marker if it is missing
    (so that restoring the file changes the key)."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return 'missing'
    return [st.st_size, st.st_mtime_ns]


def _fingerprint(records: Sequence[Record], size: int, num_classes: int, on_bad_sample: str, workers: int = 8) -> str:
    """A key of everything a cached split depends on: the format version, the cache size,
    `num_classes`, `on_bad_sample` (it decides which samples are in), and per record its
    annotations, its image id and the size and modification time of its image and mask files."""
    h = hashlib.sha1(json.dumps([FORMAT_VERSION, size, num_classes, on_bad_sample]).encode())
    files = [[r.path, r.mask_path, *r.extra_mask_paths, *r.ignore_mask_paths] for r in records]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:  # stat is slow on network disks
        states = list(pool.map(lambda paths: [_file_state(p) for p in paths], files))
    for r, state in zip(records, states):
        h.update(
            json.dumps(
                [
                    r.path,
                    r.name,
                    r.label,
                    np.asarray(r.boxes, np.float64).tolist(),
                    r.mask_path,
                    list(r.extra_mask_paths),
                    list(r.ignore_mask_paths),
                    r.mask_kind,
                    r.boxes_from_mask,
                    None if r.size is None else list(r.size),
                    r.error,
                    state,
                ]
            ).encode()
        )
    return h.hexdigest()[:16]


def cached_split(
    cache_dir: str,
    name: str,
    records: Sequence[Record],
    size: int,
    num_classes: int,
    on_bad_sample: str = 'error',
    codec: str = 'raw',
) -> Split:
    """The records decoded once into `cache_dir/<name>-<fingerprint>/` (`records.cached`) and
    read from there: the fingerprint covers everything the content depends on."""
    key = _fingerprint(records, size, num_classes, on_bad_sample)
    if codec != 'raw':
        key += f'-{codec}'
    return records_lib.cached(
        os.path.join(cache_dir, f'{name}-{key}'),
        size,
        lambda writer: decode_into(writer, records, size, num_classes, on_bad_sample, name),
        codec,
    )
