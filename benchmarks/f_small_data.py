"""How many training images f from scratch needs, and the CPU recipe's f against a plain CNN.

    python benchmarks/f_small_data.py --set=digit --sizes=2000,5000,20000 --seeds=0,1,2 \
        --out=runs/f_small_data

For each training size the set is written by its generator (`benchmarks/make_<set>_set.py`, data
seed 0: the same val and test at every size), then per seed:
- f: the own-data CPU preset (`configs/custom.py:method1,small`, the set's data options below)
  trained by `main.py --stage=train_f`; its kept validation accuracy from f_quality.json;
- plain CNN: four blocks of 3x3 convolution, BatchNorm, ReLU and 2x2 max-pooling (32, 64, 128,
  256 channels), global average pooling and a linear layer, trained with the same recipe and
  budget as f (optimiser, schedule, batch, augmentations, epochs, patience on the same validation
  scores, the most accurate epoch kept): only the network differs.

Prints a table (median and worst over seeds) and writes <out>/f_small_data.json. Validation
accuracy only: the test split is never read.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Data options of each set (not tuned: what its classes allow). Letters and digits mirrored are
# other shapes or none.
SET_OPTIONS = {
    'digit': {'data.flip': False},
    'glyph': {'data.flip': False},
    'photo': {},
}


def make_set(name: str, out: str, num_train: int) -> str:
    folder = os.path.join(out, 'sets', f'{name}_{num_train}')
    if not os.path.isfile(os.path.join(folder, 'README.txt')):
        script = os.path.join(ROOT, 'benchmarks', f'make_{name}_set.py')
        subprocess.run([sys.executable, script, f'--out={folder}', f'--num_train={num_train}'], check=True)
    return folder


def options(name: str, root: str, seed: int) -> dict:
    """The config values that the preset's config gets for this set, root and seed."""
    return {'data.root': root, 'seed': seed, **SET_OPTIONS[name]}


def preset_config(name: str, root: str, seed: int):
    """The preset's config with the set's options (what main.py gets as --config.x=y)."""
    from configs import custom

    config = custom.get_config('method1,small')
    for key, value in options(name, root, seed).items():
        *parents, leaf = key.split('.')
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def train_recipe_f(name: str, root: str, seed: int, workdir: str) -> dict:
    """f of the preset through the CLI; returns f_quality.json's entry and the wall time."""
    quality = os.path.join(workdir, 'f_quality.json')
    start = time.time()
    if not os.path.isfile(quality):
        cmd = [
            sys.executable,
            os.path.join(ROOT, 'main.py'),
            '--config=' + os.path.join(ROOT, 'configs', 'custom.py') + ':method1,small',
            f'--workdir={workdir}',
            '--stage=train_f',
            *[f'--config.{k}={v}' for k, v in options(name, root, seed).items()],
        ]
        with open(workdir + '.log', 'w') as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    with open(quality) as fh:
        entry = json.load(fh)['f_classifier']
    return dict(
        val_accuracy=entry['val_accuracy'],
        kept_epoch=entry['kept_epoch'],
        last_epoch=entry['last_epoch'],
        wall_s=time.time() - start,
    )


def plain_cnn():
    import flax.linen as nn

    class PlainCNN(nn.Module):
        """Four conv-BN-ReLU-maxpool blocks, global average pooling, a linear classifier."""

        num_classes: int

        @nn.compact
        def __call__(self, x, train: bool = False):
            for channels in (32, 64, 128, 256):
                x = nn.Conv(channels, (3, 3), use_bias=False)(x)
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
                x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
            return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))

    return PlainCNN


def train_plain_cnn(name: str, root: str, seed: int, cache_dir: str) -> dict:
    """The plain CNN with f's recipe and budget (the preset's config with the same options)."""
    import jax
    import jax.numpy as jnp

    from wsol_jax import config as config_lib
    from wsol_jax import methods, parallel, workdir
    from wsol_jax.data import load_dataset
    from wsol_jax.data.dataset import Augment, center_crop
    from wsol_jax.data.pipeline import classification_batches, map_split
    from wsol_jax.train import state as state_lib
    from wsol_jax.train import steps

    config = preset_config(name, root, seed)
    config_lib.validate(config)
    start = time.time()
    data = load_dataset(config, cache_dir)
    mesh = parallel.make_mesh()
    cfg = config.f
    steps_per_epoch = len(data.train) // cfg.batch_size
    model = plain_cnn()(data.num_classes)
    crop = config.data.crop_size
    tx = state_lib.make_optimizer(cfg.optimizer, steps_per_epoch, cfg.max_epochs)
    state = state_lib.create_train_state(model, jax.random.key(seed), (1, crop, crop, 3), tx)
    augment = Augment(crop, config.data.flip, cfg.scale_jitter, cfg.colour_jitter)
    step = steps.compile_step(methods.F_NETWORKS[workdir.F_CLASSIFIER].step(model, augment, cfg, config.g), mesh)
    predict = jax.jit(lambda v, images: jnp.argmax(model.apply(v, center_crop(images, crop)), -1))
    rng = jax.random.key(seed)
    best, best_epoch, since = -1.0, 0, 0
    for epoch in range(1, cfg.max_epochs + 1):
        k_epoch = jax.random.fold_in(rng, epoch)
        for i, batch in enumerate(classification_batches(data.train, cfg.batch_size, mesh, k_epoch)):
            state, _ = step(state, batch, jax.random.fold_in(k_epoch, i))
        variables = {'params': state.params, 'batch_stats': state.batch_stats}
        predicted = np.concatenate(
            [
                parallel.to_host(out)[: len(valid)]
                for (out,), valid in map_split(lambda b: predict(variables, b['image']), data.val, 128, mesh)
            ]
        )
        accuracy = float(np.mean(predicted == data.val.labels))
        print(f'  plain CNN epoch {epoch}: val {accuracy:.3f}', flush=True)
        if accuracy > best:
            best, best_epoch, since = accuracy, epoch, 0
        else:
            since += 1
            if cfg.patience and since >= cfg.patience and epoch * steps_per_epoch * cfg.batch_size >= cfg.min_images:
                break  # f's budget: patience, not before f.min_images examples
    return dict(val_accuracy=best, kept_epoch=best_epoch, last_epoch=epoch, wall_s=time.time() - start)


def save(path: str, new: dict) -> None:
    """Add `new` to the results on disk (another invocation may have written others meanwhile)."""
    results = {}
    if os.path.isfile(path):
        with open(path) as fh:
            results = json.load(fh)
    results.update(new)
    with open(path + '.tmp', 'w') as fh:
        json.dump(results, fh, indent=1)
    os.replace(path + '.tmp', path)


def table(results: dict, name: str, sizes: list[int], seeds: list[int], nets: list[str]) -> str:
    """Validation accuracy by training size and network: median (worst) over `seeds`."""
    lines = [
        f'{name}: validation accuracy, median (worst) over seeds {",".join(map(str, seeds))}',
        f'{"train images":>12} ' + ' '.join(f'{n:>16}' for n in nets),
    ]
    for size in sizes:
        cells = []
        for net in nets:
            values = [results[f'{name}/{size}/{net}/{s}']['val_accuracy'] for s in seeds]
            cells.append(f'{np.median(values):.3f} ({min(values):.3f})'.rjust(16))
        lines.append(f'{size:>12} ' + ' '.join(cells))
    return '\n'.join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--set', choices=sorted(SET_OPTIONS), default='digit')
    p.add_argument('--sizes', default='2000,5000,20000', help='training images, comma-separated')
    p.add_argument('--seeds', default='0,1,2')
    p.add_argument('--out', default='runs/f_small_data')
    p.add_argument('--nets', default='f,plain', help='f (the preset), plain (the plain CNN), or both')
    a = p.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(',')]
    seeds = [int(s) for s in a.seeds.split(',')]
    nets = a.nets.split(',')
    results_path = os.path.join(a.out, 'f_small_data.json')
    results = {}
    if os.path.isfile(results_path):
        with open(results_path) as fh:
            results = json.load(fh)
    for size in sizes:
        root = make_set(a.set, a.out, size)
        for seed in seeds:
            workdir = os.path.join(a.out, f'{a.set}_{size}', f'f_seed{seed}')
            os.makedirs(os.path.dirname(workdir), exist_ok=True)
            for net in nets:
                key = f'{a.set}/{size}/{net}/{seed}'
                if key in results:
                    continue
                print(f'[{key}]', flush=True)
                if net == 'f':
                    results[key] = train_recipe_f(a.set, root, seed, workdir)
                else:
                    results[key] = train_plain_cnn(a.set, root, seed, os.path.join(workdir, 'data_cache'))
                print(f'[{key}] {results[key]}', flush=True)
                save(results_path, {key: results[key]})
    print(table(results, a.set, sizes, seeds, nets))
    return results


if __name__ == '__main__':
    main()
