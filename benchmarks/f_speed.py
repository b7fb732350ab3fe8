"""Forward time of each f architecture (inference, `train=False`), per image, to choose a preset.

    python benchmarks/f_speed.py                                   # every full-size f, 64 and 224 px, batch 8
    python benchmarks/f_speed.py --archs=vit_s16,resnet50 --sizes=64 --dtype=bfloat16

Random weights (the time does not depend on their values), a 1000-class head, the compiled
forward timed after one untimed call; one line per architecture and size: compile seconds, then
the median over `--repeats` calls in ms per batch and per image.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from wsol_jax.models import Classifier  # noqa: E402

FULL_SIZE = ['resnet18', 'resnet34', 'resnet50', 'resnet101', 'vit_ti16', 'vit_s16', 'vit_b16', 'convnext_tiny']
flags.DEFINE_list('archs', FULL_SIZE, 'Architectures of f (wsol_jax.models.registry names).')
flags.DEFINE_list('sizes', ['64', '224'], 'Input sides in pixels.')
flags.DEFINE_integer('batch', 8, 'Images per call.')
flags.DEFINE_integer('repeats', 5, 'Timed calls per measurement (the median is printed).')
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')
flags.DEFINE_float('width', 1.0, 'Width multiplier.')
FLAGS = flags.FLAGS


def measure(arch: str, size: int) -> tuple[float, float]:
    """`(compile seconds, median seconds per call)` of f's forward on a `(batch, size, size, 3)` batch."""
    f = Classifier(1000, arch, FLAGS.width, jnp.dtype(FLAGS.dtype))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(FLAGS.batch, size, size, 3)), jnp.float32)
    shapes = jax.eval_shape(f.init, jax.random.key(0), x)  # no init compile: the values do not matter
    rng = np.random.default_rng(1)
    variables = {
        c: jax.tree.map(
            lambda s: jnp.asarray(rng.normal(0, 0.02, s.shape) if c == 'params' else np.ones(s.shape), s.dtype), tree
        )  # BatchNorm variances
        for c, tree in shapes.items()
    }
    start = time.perf_counter()
    forward = jax.jit(f.apply).lower(variables, x).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(forward(variables, x))
    times = []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        jax.block_until_ready(forward(variables, x))
        times.append(time.perf_counter() - start)
    return compile_s, float(np.median(times))


def main(argv):
    del argv
    print(
        f'device: {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs; batch {FLAGS.batch}, {FLAGS.dtype}, '
        f'width {FLAGS.width}'
    )
    for arch in FLAGS.archs:
        for size in map(int, FLAGS.sizes):
            compile_s, call_s = measure(arch, size)
            print(
                f'{arch:>18} {size:>4} px: compile {compile_s:6.1f} s, {1e3 * call_s:9.1f} ms/batch, '
                f'{1e3 * call_s / FLAGS.batch:8.2f} ms/image',
                flush=True,
            )


if __name__ == '__main__':
    app.run(main)
