"""From a cached split to global device batches: shuffling, triplets, per-host reading, prefetch.

Every host computes the same global index batches from the same key (so one host and many see
the same global batches, and a resumed epoch the same order) and reads only its own rows of
each (`parallel.local_slice`). Grain runs the reads: a `MapDataset` over the index batches,
mapped to this host's rows read from the record cache in `threads` threads, in order and ahead
of the consumer; `prefetch` then keeps the next device transfer in flight while a step runs.
"""

from __future__ import annotations

import collections
import os
from typing import Callable, Iterator, Sequence

import grain
import jax
import numpy as np

from wsol_jax import parallel
from wsol_jax.data.dataset import Split, eval_batches, train_batches, triplet_indices

MAX_THREADS = 16


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
    """Keep `size` batches staged on the device ahead of the consumer."""
    queue = collections.deque()
    try:
        for item in iterator:
            queue.append(item)
            if len(queue) >= size:
                yield queue.popleft()
        while queue:
            yield queue.popleft()
    finally:  # closed early (a stage that stops mid-epoch): close the source now, not at garbage collection
        if hasattr(iterator, 'close'):
            iterator.close()


def read_threads(threads: int = 0) -> int:
    """`config.data.read_threads`; 0: one per core this process may use (at most 16)."""
    return threads or min(MAX_THREADS, len(os.sched_getaffinity(0)))


def stream(
    read: Callable[[np.ndarray], dict], index_batches: Sequence[np.ndarray], mesh, threads: int = 0
) -> Iterator[dict]:
    """Global device batches, in order: `read(local indices) -> {name: host array}` runs in
    Grain's reader threads on this host's rows of each global index batch."""
    dataset = grain.MapDataset.source(index_batches).map(lambda idx: read(parallel.local_slice(idx)))
    n = read_threads(threads)
    local = iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=n, prefetch_buffer_size=2 * n)))

    def global_batches():
        try:
            for batch in local:
                yield parallel.global_batch(batch, mesh)
        finally:  # stopped early (an error, a preemption): release the reader threads now
            local.close()

    return prefetch(global_batches())


def classification_batches(
    split: Split, batch_size: int, mesh, key: jax.Array, threads: int = 0, skip: int = 0
) -> Iterator[dict]:
    """Shuffled `{'image': (B, S, S, 3) uint8, 'label': (B,)}` global batches for one epoch, from its
    `skip`-th batch on (a resumed epoch: the order is the same, the batches done are not read)."""
    read = lambda idx: {'image': split.images[idx], 'label': split.labels[idx]}
    return stream(read, list(train_batches(len(split), batch_size, key))[skip:], mesh, threads)


def triplet_batches(
    split: Split, batch_size: int, mesh, key: jax.Array, threads: int = 0, skip: int = 0
) -> Iterator[dict]:
    """Shuffled `{'image': (B, 3, S, S, 3)}` batches of (anchor, positive, negative), from the
    `skip`-th on."""
    k_order, k_pairs = jax.random.split(key)
    triplets = [
        triplet_indices(split.labels, idx, jax.random.fold_in(k_pairs, i))
        for i, idx in enumerate(train_batches(len(split), batch_size, k_order))
        if i >= skip
    ]
    return stream(lambda idx: {'image': split.images[idx]}, triplets, mesh, threads)


def map_split(
    fn: Callable, split: Split, batch_size: int, mesh, threads: int = 0
) -> Iterator[tuple[tuple, np.ndarray]]:
    """Run `fn(batch)` (a compiled evaluation function of a global batch
    `{'image': (B, S, S, 3) uint8, 'label': (B,)}`) over a split in order; yields
    `(outputs as device arrays, indices of the valid rows)`. Padding rows of the last batch are
    computed and must be dropped with `[:len(indices)]`."""
    batches = list(eval_batches(len(split), batch_size))
    read = lambda idx: {'image': split.images[idx], 'label': split.labels[idx]}
    for batch, (idx, n_valid) in zip(stream(read, [idx for idx, _ in batches], mesh, threads), batches):
        out = fn(batch)
        yield (out if isinstance(out, tuple) else (out,)), idx[:n_valid]
