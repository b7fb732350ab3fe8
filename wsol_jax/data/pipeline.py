"""From a cached split to global device batches: shuffling, triplets, sharding, prefetch.

Every host computes the same global index batch from the same key and feeds only its own slice
(`parallel.local_slice`); transfers are asynchronous, and `prefetch` keeps the next batch in
flight while the current step runs.
"""
from __future__ import annotations

import collections
from typing import Callable, Iterator

import jax
import numpy as np

from wsol_jax import parallel
from wsol_jax.data.dataset import Split, eval_batches, train_batches, triplet_indices


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
    """Keep `size` batches staged on the device ahead of the consumer."""
    queue = collections.deque()
    for item in iterator:
        queue.append(item)
        if len(queue) >= size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def classification_batches(split: Split, batch_size: int, mesh, key: jax.Array) -> Iterator[dict]:
    """Shuffled `{'image': (B, S, S, 3) uint8, 'label': (B,)}` global batches for one epoch."""
    def gen():
        for idx in train_batches(len(split), batch_size, key):
            local = parallel.local_slice(idx)
            yield parallel.global_batch({'image': split.images[local], 'label': split.labels[local]}, mesh)
    return prefetch(gen())


def triplet_batches(split: Split, batch_size: int, mesh, key: jax.Array) -> Iterator[dict]:
    """Shuffled `{'image': (B, 3, S, S, 3)}` batches of (anchor, positive, negative)."""
    k_order, k_pairs = jax.random.split(key)

    def gen():
        for i, idx in enumerate(train_batches(len(split), batch_size, k_order)):
            triplets = triplet_indices(split.labels, idx, jax.random.fold_in(k_pairs, i))
            yield parallel.global_batch({'image': split.images[parallel.local_slice(triplets)]}, mesh)
    return prefetch(gen())


def map_split(fn: Callable, split: Split, batch_size: int, mesh) -> Iterator[tuple[tuple, np.ndarray]]:
    """Run `fn(batch)` (a compiled evaluation function of a global batch
    `{'image': (B, S, S, 3) uint8, 'label': (B,)}`) over a split in order; yields
    `(outputs as device arrays, indices of the valid rows)`. Padding rows of the last batch are
    computed and must be dropped with `[:len(indices)]`."""
    def gen():
        for idx, n_valid in eval_batches(len(split), batch_size):
            local = parallel.local_slice(idx)
            yield parallel.global_batch({'image': split.images[local], 'label': split.labels[local]},
                                        mesh), idx[:n_valid]
    for batch, valid in prefetch(gen()):
        out = fn(batch)
        yield (out if isinstance(out, tuple) else (out,)), valid
