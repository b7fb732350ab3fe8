"""Throughput of the compiled steps: ms/step, images/s, model FLOP/s (XLA cost analysis), MFU,
peak device memory, and the end-to-end images/s of a real epoch of g including the input pipeline.

    python benchmarks/throughput.py --config=configs/cub.py:method1 --batch=128 --size=224 \
        --config.dtype=bfloat16            # one GPU, the paper's g batch
    python benchmarks/throughput.py --config=configs/synthetic.py:method1 --batch=32 --size=64   # CPU

Every step runs data-parallel over all local devices (the global batch is --batch).
"""

import functools
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from wsol_jax import inference, parallel  # noqa: E402
from wsol_jax.data.dataset import Split  # noqa: E402
from wsol_jax.data.pipeline import classification_batches  # noqa: E402
from wsol_jax.train import steps  # noqa: E402
from wsol_jax.models.build import build_classifier, build_weight_map_net  # noqa: E402
from wsol_jax.train.state import create_train_state, make_optimizer  # noqa: E402

config_flags.DEFINE_config_file('config', 'configs/synthetic.py:method1', 'Config file.', lock_config=True)
flags.DEFINE_integer('batch', 32, 'Global batch size (triplets count as 3 images each).')
flags.DEFINE_integer('size', 64, 'Crop size in pixels (the cache holds the same size).')
flags.DEFINE_integer('steps', 20, 'Timed steps per measurement.')
flags.DEFINE_integer('warmup', 3, 'Untimed steps after compilation.')
flags.DEFINE_list(
    'what',
    ['f', 'f_triplet', 'g_method1', 'g_method2', 'maps', 'epoch', 'input'],
    'What to measure (input: the input pipeline alone, cache -> sharded device batches).',
)
flags.DEFINE_enum(
    'store',
    'records',
    ['records', 'memory'],
    'epoch/input: read from the on-disk record cache (what runs use) or a numpy array in memory.',
)
flags.DEFINE_enum('codec', 'raw', ['raw', 'jpeg'], 'epoch/input: the record cache codec (data.cache_codec).')
flags.DEFINE_integer('threads', 0, 'epoch/input: reader threads (data.read_threads; 0: one per core).')
FLAGS = flags.FLAGS

# Dense bf16 peak FLOP/s per device, for MFU.
PEAK_FLOPS = {'H100': 989e12, 'H200': 989e12, 'A100': 312e12, 'L4': 121e12, 'V100': 125e12}


def photo_like(rng, n: int, size: int) -> np.ndarray:
    """`(n, size, size, 3)` uint8 images with a photograph's statistics for a codec (smooth
    colour fields plus sensor noise); random noise would be a JPEG worst case."""
    import cv2

    images = [
        cv2.resize(rng.integers(0, 256, (8, 8, 3)).astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
        for _ in range(n)
    ]
    return np.clip(np.stack(images) + rng.normal(0, 4, (n, size, size, 3)), 0, 255).astype(np.uint8)


def input_split(rng, n: int, size: int) -> Split:
    """`n` images as the runs read them (`--store=records`: the on-disk record cache in a
    temporary folder, `--codec`) or in memory (`--store=memory`)."""
    images = photo_like(rng, n, size)
    labels = np.zeros(n, np.int32)
    if FLAGS.store == 'memory':
        return Split(images, labels)
    import tempfile
    from wsol_jax.data import records

    def build(writer):
        for i, image in enumerate(images):
            writer.add(image, 0, str(i))
        return []

    return records.cached(os.path.join(tempfile.mkdtemp(prefix='wsol_throughput_'), 'split'), size, build, FLAGS.codec)


def peak_flops(device) -> float | None:
    kind = getattr(device, 'device_kind', '')
    return next((v for k, v in PEAK_FLOPS.items() if k in kind), None)


def peak_memory_gib() -> str:
    stats = jax.local_devices()[0].memory_stats() or {}
    if 'peak_bytes_in_use' in stats:
        return f'{stats["peak_bytes_in_use"] / 2**30:.2f} GiB (device)'
    return f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (host RSS)'


def timed(compiled, args, n_steps, warmup, carry_state):
    """Mean seconds per call; a train step feeds its new state back."""
    out = None
    for i in range(warmup + n_steps):
        if i == warmup:
            jax.block_until_ready(out)
            t0 = time.perf_counter()
        out = compiled(*args)
        if carry_state:
            args = (out[0],) + args[1:]
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / n_steps


def report(name, compiled, seconds, images):
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get('flops', 0.0)) if cost else 0.0
    peak = peak_flops(jax.devices()[0])
    mfu = f'{100 * flops / seconds / (peak * jax.device_count()):.1f}%' if peak and flops else 'n/a'
    print(
        f'{name:12s} {1e3 * seconds:9.2f} ms/step {images / seconds:10.1f} img/s '
        f'{flops / seconds / 1e12:8.3f} TFLOP/s  MFU {mfu:>6s}  peak mem {peak_memory_gib()}',
        flush=True,
    )
    return images / seconds


def main(_):
    cfg, b, size = FLAGS.config, FLAGS.batch, FLAGS.size
    mesh = parallel.make_mesh()
    parallel.check_batch_size(b, mesh, '--batch')
    print(
        f'{jax.device_count()} x {jax.devices()[0].device_kind}; batch {b}, {size} px, dtype {cfg.dtype}, '
        f'f {cfg.f.arch} x{cfg.f.width}, g {cfg.g.depth} x{cfg.g.width}'
    )
    rng = np.random.default_rng(0)
    shape = (1, size, size, 3)
    f_cls = build_classifier(cfg, 200)
    f_emb = build_classifier(cfg, cfg.f.embed_dim)
    g = build_weight_map_net(cfg)
    opt = make_optimizer(cfg.g.optimizer, 100)
    rep = lambda t: parallel.replicate(t, mesh)
    f_state = rep(create_train_state(f_cls, jax.random.key(0), shape, make_optimizer(cfg.f.optimizer, 100)))
    femb_state = rep(create_train_state(f_emb, jax.random.key(0), shape, make_optimizer(cfg.f.optimizer, 100)))
    g_state = rep(create_train_state(g, jax.random.key(1), shape, opt))
    single = parallel.global_batch(
        {
            'image': rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8),
            'label': rng.integers(0, 200, (b,)).astype(np.int32),
        },
        mesh,
    )
    per = b // 3 or 1
    triple = parallel.global_batch({'image': rng.integers(0, 256, (per, 3, size, size, 3), dtype=np.uint8)}, mesh)
    key = jax.random.key(0)
    g_rate = None
    for what in FLAGS.what:
        if what == 'f':
            fn = steps.compile_step(functools.partial(steps.f_classifier_step, f_cls, size), mesh, donate_state=False)
            args, imgs, carry = (f_state, single, key), b, True
        elif what == 'f_triplet':
            fn = steps.compile_step(functools.partial(steps.f_triplet_step, f_emb, size, 1.0), mesh, donate_state=False)
            args, imgs, carry = (femb_state, triple, key), 3 * per, True
        elif what in ('g_method1', 'g_method2'):
            method = what.split('_')[1]
            f_model, f_vars = (f_cls, f_state.variables) if method == 'method1' else (f_emb, femb_state.variables)
            fn = steps.compile_step(
                functools.partial(
                    steps.g_step,
                    steps.frozen_apply(f_model),
                    g,
                    cfg.g,
                    size,
                    {'method1': steps.method1_objective, 'method2': steps.method2_objective}[method],
                ),
                mesh,
                n_frozen=1,
                donate_state=False,
            )
            args = (g_state, f_vars, single if method == 'method1' else triple, key)
            imgs, carry = (b if method == 'method1' else 3 * per), True
        elif what == 'maps':
            fn = inference.compile_weight_maps(g, size, cfg.eval)
            args, imgs, carry = (g_state.variables, single['image']), b, False
        elif what in ('epoch', 'input'):
            continue
        else:
            raise app.UsageError(f'unknown --what {what}')
        compiled = fn.lower(*args).compile()
        rate = report(what, compiled, timed(compiled, args, FLAGS.steps, FLAGS.warmup, carry), imgs)
        if what == 'g_method1':
            g_rate, g_step = rate, compiled
    if 'epoch' in FLAGS.what:
        # A real epoch of g (Method I) through the input pipeline: host uint8 cache -> sharded
        # device batches (prefetched) -> compiled step with on-device crop/flip/normalise.
        if g_rate is None:
            raise app.UsageError('--what=epoch needs g_method1 measured in the same run')
        split = input_split(rng, b * (FLAGS.steps + FLAGS.warmup), size)
        state = g_state
        batches = classification_batches(split, b, mesh, jax.random.key(1), FLAGS.threads)
        for i, batch in enumerate(batches):
            if i == FLAGS.warmup:
                jax.block_until_ready(state)
                t0 = time.perf_counter()
            state, _ = g_step(state, f_state.variables, batch, key)
        jax.block_until_ready(state)
        rate = b * FLAGS.steps / (time.perf_counter() - t0)
        print(
            f'{"epoch":12s} {rate:10.1f} img/s end to end = {100 * rate / g_rate:.0f}% of the compiled '
            f'g step (input pipeline included)'
        )

    if 'input' in FLAGS.what:
        # The input pipeline alone: record cache -> shuffled index batches -> Grain reader
        # threads -> sharded, prefetched device batches, no model. Its images/s bounds a real
        # epoch from above.
        split = input_split(rng, b * (FLAGS.steps + FLAGS.warmup), size)
        for i, batch in enumerate(classification_batches(split, b, mesh, jax.random.key(2), FLAGS.threads)):
            if i == FLAGS.warmup:
                jax.block_until_ready(batch)
                t0 = time.perf_counter()
        jax.block_until_ready(batch)
        rate = b * FLAGS.steps / (time.perf_counter() - t0)
        print(
            f'{"input":12s} {rate:10.1f} img/s input pipeline alone ({size} px, {FLAGS.store}'
            f'{", " + FLAGS.codec if FLAGS.store == "records" else ""}, no model)'
        )


if __name__ == '__main__':
    app.run(main)
