"""Data parallelism: one `jax.jit` over a one-axis device mesh `('data',)`.

The batch is sharded along `'data'`, the train state is replicated; XLA's SPMD partitioner
inserts the cross-device reductions, so gradients, losses and BatchNorm statistics are those of
the global batch on one device, eight, or several hosts (after `jax.distributed.initialize()`).
Each host feeds only its own slice of every global batch (`global_batch`).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from wsol_jax.errors import ConfigError

DATA_AXIS = 'data'


def maybe_initialize_distributed(enabled: bool) -> None:
    """Join a multi-host job. `jax.distributed.initialize()` detects SLURM, Open MPI and Cloud
    TPU itself and reads `JAX_COORDINATOR_ADDRESS`; the process count and id of a hand-made
    launch come from `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID` (JAX itself does not read these)."""
    if enabled or os.environ.get('JAX_COORDINATOR_ADDRESS'):
        # Cross-process collectives of CPU devices (tests, CPU clusters) go through gloo; the
        # setting does not touch GPU or TPU collectives.
        jax.config.update('jax_cpu_collectives_implementation', 'gloo')
        count, index = os.environ.get('JAX_NUM_PROCESSES'), os.environ.get('JAX_PROCESS_ID')
        if (count is None) != (index is None):
            raise ConfigError('set both JAX_NUM_PROCESSES and JAX_PROCESS_ID (or neither, under SLURM / MPI)')
        jax.distributed.initialize(
            num_processes=None if count is None else int(count), process_id=None if index is None else int(index)
        )


HOST_DEVICE_FLAG = '--xla_force_host_platform_device_count'


def host_device_count(batch_sizes, cores: int) -> int:
    """The most CPU devices, at most `cores`, that divide every batch size (1 if none does)."""
    return max(n for n in range(1, max(1, cores) + 1) if all(b % n == 0 for b in batch_sizes))


def spread_over_host_cores(config) -> int:
    """On a CPU, split the host into one XLA device per core this process may use (`config.cpu_devices`,
    0: as many as divide the batch sizes), so that the data-parallel mesh keeps every core busy: XLA's
    own threading leaves a core half idle on the small convolutions of a CPU run. Must run before JAX
    starts its backends (the CLI calls it first); it changes nothing on a GPU or TPU, where the mesh
    holds the accelerators, nor in a multi-host run or where XLA_FLAGS already sets a device count.
    Returns the device count set (0: left as it was)."""
    from jax._src import xla_bridge

    flags = os.environ.get('XLA_FLAGS', '')
    if (
        config.distributed
        or os.environ.get('JAX_COORDINATOR_ADDRESS')
        or HOST_DEVICE_FLAG in flags
        or xla_bridge.backends_are_initialized()
    ):
        return 0
    batches = (config.f.batch_size, config.g.batch_size, config.eval.batch_size, config.predict.batch_size)
    n = config.cpu_devices or host_device_count(batches, len(os.sched_getaffinity(0)))
    os.environ['XLA_FLAGS'] = f'{flags} {HOST_DEVICE_FLAG}={n}'.strip()
    return n


def make_mesh(devices=None) -> Mesh:
    """A one-axis mesh over `devices` (default: all devices of all hosts)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a pytree (train state, frozen variables) on every device of the mesh."""
    return jax.device_put(tree, replicated_sharding(mesh))


def check_batch_size(batch_size: int, mesh: Mesh, what: str) -> None:
    """`ConfigError` unless a global batch splits evenly over the devices and the hosts; `what`
    names the setting (e.g. `config.g.batch_size`)."""
    if batch_size % mesh.size or batch_size % jax.process_count():
        raise ConfigError(
            f'{what}={batch_size} must be divisible by the number of devices ({mesh.size}) '
            f'and of hosts ({jax.process_count()})'
        )


def local_slice(global_indices: np.ndarray) -> np.ndarray:
    """This host's part of a global batch of example indices (hosts split it in order)."""
    per_host = len(global_indices) // jax.process_count()
    start = jax.process_index() * per_host
    return global_indices[start : start + per_host]


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble host-local numpy arrays into global arrays sharded along `'data'`."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def to_host(x: jax.Array) -> np.ndarray:
    """The full value of a (possibly multi-host sharded) array as numpy, on every host."""
    if jax.process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def local_rows(x: jax.Array) -> np.ndarray:
    """This process's rows of a global batch (the rows it fed, `local_slice`), as numpy,
    without gathering the other hosts' rows."""
    n = x.shape[0]
    per = n // jax.process_count()
    start = jax.process_index() * per
    out, filled = np.empty((per,) + x.shape[1:], x.dtype), np.zeros(per, bool)
    for shard in x.addressable_shards:
        rows = shard.index[0] if shard.index else slice(None)
        s0, s1 = rows.start or 0, n if rows.stop is None else rows.stop
        lo, hi = max(s0, start), min(s1, start + per)
        if lo < hi:
            out[lo - start : hi - start] = np.asarray(shard.data)[lo - s0 : hi - s0]
            filled[lo - start : hi - start] = True
    return out if filled.all() else to_host(x)[start : start + per]


def local_valid(valid: np.ndarray, batch_size: int) -> np.ndarray:
    """The example indices of this process's valid rows of a padded global batch whose valid
    example indices are `valid` (in order): its rows are `[start, start + batch_size / hosts)`."""
    per = batch_size // jax.process_count()
    start = jax.process_index() * per
    return np.asarray(valid)[start : start + per]


def sum_over_processes(x) -> np.ndarray:
    """The sum of a host-local numpy array over all processes (metric accumulators)."""
    x = np.asarray(x)
    if jax.process_count() == 1:
        return x
    return np.asarray(multihost_utils.process_allgather(x)).sum(axis=0)


def is_chief() -> bool:
    """Only process 0 writes results, plots and logs; Orbax coordinates checkpoints itself."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process gets here (after process 0 wrote a file the others read)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
