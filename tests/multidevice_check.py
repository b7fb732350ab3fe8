"""Run by test_parallel.py in a fresh process with 8 fake CPU devices: two training steps of f
and g (both methods; g also with a ViT f inside its objective) on 8 devices and on 1 device from
the same state and global batches must give the same parameters and BatchNorm statistics.
Prints one JSON line of max differences.

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

CROP = 32
# 8 examples: one per device, so that a per-device BatchNorm statistic (over one image instead of
# the global batch) or a gradient averaged per device shows; two steps: the second one runs from
# the updated parameters and momentum of the first, as every later step does.
B, STEPS = 8, 2
OBJECTIVES = {'method1': steps.method1_objective, 'method2': steps.method2_objective}
# kind: (the network that trains, the frozen f inside g's objective or None for f's own steps)
KINDS = {
    'f_classifier': ('f4', None),
    'f_triplet': ('f8', None),
    'g_method1': ('g', 'f4'),
    'g_method2': ('g', 'f8'),
    'g_method1_vit': ('g', 'vit4'),
}
OPT = ml_collections.ConfigDict(
    dict(name='sgd', learning_rate=0.01, momentum=0.9, weight_decay=1e-4, decay_every=10, decay_factor=0.1)
)
G_CFG = ml_collections.ConfigDict(
    dict(mask_space='normalized', reg_weight=1.0, inner_weight=1.0, outer_weight=1.0, margin=1.0)
)


# ResNet-18's layer types (convolutions, BatchNorm over the batch, basic blocks, projection
# shortcuts) with one block per stage: what the parity argument is about, at half the compile time
# of the ten float64 programs.
RESNET = 'resnet_tiny_test'


def network(name: str, dtype: str):
    """The networks of the check: ResNet classifiers f with 4 outputs (classes) or 8 (Method II's
    embedding), the tiny ViT classifier f (32 px: its 4x4 patch grid), g (its ResNet U-Net)."""
    dtype = jnp.dtype(dtype)
    decoder = os.environ.get('WSOL_CHECK_DECODER', 'released')
    return {
        'f4': lambda: Classifier(4, RESNET, width=0.125, dtype=dtype),
        'f8': lambda: Classifier(8, RESNET, width=0.125, dtype=dtype),
        'vit4': lambda: Classifier(4, 'vit_tiny_test', dtype=dtype),
        'g': lambda: WeightMapNet(RESNET, width=0.125, dtype=dtype, decoder=decoder),
    }[name]()


@functools.lru_cache(maxsize=None)
def initial_state(name: str, dtype: str):
    """The train state of `network(name)` on the host (numpy leaves), initialised once and shared
    by both meshes and every kind (initialising compiles for seconds in float64): each run places
    fresh copies, which its steps may donate."""
    key = jax.random.key(1 if name == 'g' else 0)
    state = create_train_state(network(name, dtype), key, (1, CROP, CROP, 3), make_optimizer(OPT, 10))
    assert all(x.dtype == jnp.dtype(dtype) for x in jax.tree.leaves(state.params)), 'one precision throughout'
    return jax.device_get(state)


def batches(kind: str) -> list[dict]:
    """The `STEPS` global batches of `kind`, the same for both meshes: uint8 images `(B, 32, 32,
    3)` (triplets `(B, 3, 32, 32, 3)`), and labels for the classifier."""
    rng = np.random.default_rng(0)
    triplet = kind in ('f_triplet', 'g_method2')
    out = []
    for _ in range(STEPS):
        shape = (B, 3, CROP, CROP, 3) if triplet else (B, CROP, CROP, 3)
        batch = {'image': rng.integers(0, 256, shape, dtype=np.uint8)}
        if kind == 'f_classifier':
            batch['label'] = rng.integers(0, 4, (B,)).astype(np.int32)
        out.append(batch)
    return out


def step_fn(kind: str, dtype: str):
    """`(state, *frozen, batch, rng) -> (state, metrics)` of `kind` and its frozen variables."""
    trained, frozen_f = KINDS[kind]
    model = network(trained, dtype)
    if kind == 'f_classifier':
        return functools.partial(steps.f_classifier_step, model, CROP), ()
    if kind == 'f_triplet':
        return functools.partial(steps.f_triplet_step, model, CROP, G_CFG.margin), ()
    objective = OBJECTIVES['method2' if kind == 'g_method2' else 'method1']
    fn = functools.partial(steps.g_step, steps.frozen_apply(network(frozen_f, dtype)), model, G_CFG, CROP, objective)
    return fn, (initial_state(frozen_f, dtype).variables,)


def run(mesh, kind: str, dtype: str):
    """`STEPS` steps of `kind` on `mesh` from the shared initial state: the trained network's
    parameters and BatchNorm statistics, on the host."""
    fn, frozen = step_fn(kind, dtype)
    state = parallel.replicate(initial_state(KINDS[kind][0], dtype), mesh)
    frozen = tuple(parallel.replicate(v, mesh) for v in frozen)
    step = steps.compile_step(fn, mesh, n_frozen=len(frozen))
    for i, batch in enumerate(batches(kind)):
        state, _ = step(state, *frozen, parallel.global_batch(batch, mesh), jax.random.key(i))
    return jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})


def max_diff(a, b):
    """Largest difference of any tensor, relative to that tensor's largest magnitude."""
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / (np.max(np.abs(np.asarray(x))) + 1e-6))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def main(argv):
    dtype = next((a.split('=', 1)[1] for a in argv if a.startswith('--dtype=')), 'float64')
    kinds = [a for a in argv if not a.startswith('--')] or KINDS
    assert jax.device_count() == 8, jax.devices()
    with jax.enable_x64(True) if dtype == 'float64' else contextlib.nullcontext():
        one, eight = parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()
        out = {}
        for kind in kinds:
            a, b = run(one, kind, dtype), run(eight, kind, dtype)
            out[kind] = {
                'params': max_diff(a['params'], b['params']),
                'batch_stats': max_diff(a['batch_stats'], b['batch_stats']),
            }
    print(json.dumps(out))


if __name__ == '__main__':
    main(sys.argv[1:])
