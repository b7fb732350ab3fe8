"""Run by test_parallel.py in a fresh process with 8 fake CPU devices: a few training steps of f
and g (both methods) on 8 devices and on 1 device from the same state and global batches must
give the same parameters and BatchNorm statistics. Prints one JSON line of max differences.

    python tests/multidevice_check.py [--dtype=float64|float32] [kind ...]

In float64 (the default, JAX's 64-bit mode: parameters, inputs, activations and sums all float64)
the two programs differ only in the order of their floating-point sums, which moves float64
results by rounding alone; a difference that is not rounding (per-device BatchNorm statistics, a
gradient averaged per device) is as large in float64 as in float32. `--dtype=float32` shows how
much the same reordering moves the float32 training the runs use.
"""
import os

os.environ['XLA_FLAGS'] = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
os.environ['JAX_PLATFORMS'] = 'cpu'

import contextlib  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from wsol_jax import parallel  # noqa: E402
from wsol_jax.models import Classifier, WeightMapNet  # noqa: E402
from wsol_jax.train import steps  # noqa: E402
from wsol_jax.train.state import create_train_state, make_optimizer  # noqa: E402

CROP, B = 32, 16
OBJECTIVES = {'method1': steps.method1_objective, 'method2': steps.method2_objective}
KINDS = ('f_classifier', 'f_triplet', 'g_method1', 'g_method2')
OPT = ml_collections.ConfigDict(dict(name='sgd', learning_rate=0.01, momentum=0.9, weight_decay=1e-4,
                                     decay_every=10, decay_factor=0.1))
G_CFG = ml_collections.ConfigDict(dict(mask_space='normalized', reg_weight=1.0, inner_weight=1.0,
                                       outer_weight=1.0, margin=1.0))


def run(mesh, kind, dtype, n_steps=3):
    f = Classifier(8 if kind == 'f_triplet' else 4, width=0.125, dtype=dtype)
    g = WeightMapNet(width=0.125, dtype=dtype, decoder=os.environ.get('WSOL_CHECK_DECODER', 'released'))
    rng = np.random.default_rng(0)
    f_state = create_train_state(f, jax.random.key(0), (1, CROP, CROP, 3), make_optimizer(OPT, 10))
    if kind == 'f_classifier':
        fn, state, frozen = functools.partial(steps.f_classifier_step, f, CROP), f_state, ()
    elif kind == 'f_triplet':
        fn, state, frozen = functools.partial(steps.f_triplet_step, f, CROP, G_CFG.margin), f_state, ()
    else:
        method = kind.split('_')[1]
        f_trip = Classifier(8, width=0.125, dtype=dtype) if method == 'method2' else f
        f_vars = create_train_state(f_trip, jax.random.key(0), (1, CROP, CROP, 3), make_optimizer(OPT, 10)).variables
        fn = functools.partial(steps.g_step, steps.frozen_apply(f_trip), g, G_CFG, CROP, OBJECTIVES[method])
        state = create_train_state(g, jax.random.key(1), (1, CROP, CROP, 3), make_optimizer(OPT, 10))
        frozen = (parallel.replicate(f_vars, mesh),)
    assert all(x.dtype == dtype for x in jax.tree.leaves(state.params)), 'the check must run in one precision'
    state = parallel.replicate(state, mesh)
    step = steps.compile_step(fn, mesh, n_frozen=len(frozen))
    triplet = kind in ('f_triplet', 'g_method2')
    for i in range(n_steps):
        shape = (B, 3, CROP, CROP, 3) if triplet else (B, CROP, CROP, 3)
        batch = {'image': rng.integers(0, 256, shape, dtype=np.uint8)}
        if kind == 'f_classifier':
            batch['label'] = rng.integers(0, 4, (B,)).astype(np.int32)
        state, _ = step(state, *frozen, parallel.global_batch(batch, mesh), jax.random.key(i))
    return jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})


def max_diff(a, b):
    """Largest difference of any tensor, relative to that tensor's largest magnitude."""
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / (np.max(np.abs(np.asarray(x))) + 1e-6))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main(argv):
    dtype = next((a.split('=', 1)[1] for a in argv if a.startswith('--dtype=')), 'float64')
    kinds = [a for a in argv if not a.startswith('--')] or KINDS
    assert jax.device_count() == 8, jax.devices()
    with jax.enable_x64(True) if dtype == 'float64' else contextlib.nullcontext():
        one, eight = parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()
        out = {}
        for kind in kinds:
            a, b = run(one, kind, jnp.dtype(dtype)), run(eight, kind, jnp.dtype(dtype))
            out[kind] = {'params': max_diff(a['params'], b['params']),
                         'batch_stats': max_diff(a['batch_stats'], b['batch_stats'])}
    print(json.dumps(out))


if __name__ == '__main__':
    main(sys.argv[1:])
