"""`Split`: the images of one split and their annotations (the data model every source returns).

Storage-agnostic: images and masks may be numpy arrays or the record cache's on-demand arrays
(`wsol_jax.data.records`), which the split only indexes; so the record cache can build splits
without this module knowing about it.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np


@dataclasses.dataclass
class Split:
    """One split. `images` `(N, S, S, 3)` uint8 (a `RecordArray` read on demand, or in memory);
    `labels` `(N,)` int32; `boxes` `(N, K, 4)` float `[x0, y0, x1, y1]` in the original image's
    pixels, `PAD_BOX` rows, or None; `masks` at the original resolution (a `MaskArray`, an
    `(N, H, W)` uint8 array or a list of `(H_i, W_i)` ones; 1 = object, 255 = ignored; read them
    with `mask_rows`) or None; `names` the image ids (the
    source's own: wsolevaluation's image_ids.txt, CUB's images.txt paths, ...); `sizes` `(N, 2)`
    the original `(width, height)` (None: images made at the cache size, `(S, S)`)."""

    images: np.ndarray  # or a records.RecordArray
    labels: np.ndarray
    boxes: Optional[np.ndarray] = None
    masks: Optional[np.ndarray | list] = None  # or a records.MaskArray
    names: Optional[list] = None
    sizes: Optional[np.ndarray] = None

    def __post_init__(self):
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f'images must be (N, S, S, 3) uint8, got {self.images.shape} {self.images.dtype}')
        for name in ('labels', 'boxes', 'masks', 'names', 'sizes'):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f'{name} has {len(value)} entries for {n} images')

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return self.images.shape[1]

    @property
    def original_sizes(self) -> np.ndarray:
        """`(N, 2)` int: each original image's `(width, height)`."""
        if self.sizes is not None:
            return np.asarray(self.sizes)
        return np.full((len(self), 2), self.size, np.int64)

    def mask_rows(self, rows) -> list[np.ndarray]:
        """The original-resolution masks of `rows` (an index array), read from disk where stored."""
        if isinstance(self.masks, list):
            return [self.masks[i] for i in np.asarray(rows)]
        return list(self.masks[np.asarray(rows)])

    def subset(self, index) -> 'Split':
        """The rows `index`; record-backed arrays stay on disk (a view of those rows)."""

        def take(a):
            if isinstance(a, list):
                return [a[i] for i in np.asarray(index)]
            # record-backed arrays (records.RecordArray, MaskArray) have their own view of rows
            return None if a is None else a.subset(index) if hasattr(a, 'subset') else a[index]

        names = None if self.names is None else [self.names[i] for i in np.asarray(index)]
        return Split(take(self.images), self.labels[index], take(self.boxes), take(self.masks), names, take(self.sizes))
