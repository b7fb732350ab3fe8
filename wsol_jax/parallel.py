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
    """Join a multi-host job: `jax.distributed.initialize()` reads the coordinator address,
    process count and id from the cluster environment (SLURM, Cloud TPU, or the
    `JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID` variables)."""
    if enabled or os.environ.get('JAX_COORDINATOR_ADDRESS'):
        jax.distributed.initialize()


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
    if batch_size % mesh.size or batch_size % jax.process_count():
        raise ConfigError(f'{what} batch size {batch_size} must be divisible by the number of devices '
                         f'({mesh.size}) and of hosts ({jax.process_count()})')


def local_slice(global_indices: np.ndarray) -> np.ndarray:
    """This host's part of a global batch of example indices (hosts split it in order)."""
    per_host = len(global_indices) // jax.process_count()
    start = jax.process_index() * per_host
    return global_indices[start:start + per_host]


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble host-local numpy arrays into global arrays sharded along `'data'`."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def to_host(x: jax.Array) -> np.ndarray:
    """The full value of a (possibly multi-host sharded) array as numpy, on every host."""
    if jax.process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def is_chief() -> bool:
    """Only process 0 writes results, plots and logs; Orbax coordinates checkpoints itself."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process gets here (after process 0 wrote a file the others read)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
