"""Peak memory of --stage=predict on large photos against small ones: it must not grow with the
photos' size times the batch.

    python benchmarks/predict_memory.py [--config=configs/synthetic.py:method1] [--model=EXPORT_OR_WORKDIR]
        [--n=4] [--large=8000x6000] [--small=640x480] [--batch-size=32]

Writes `n` JPEGs of each size to a temporary folder, then runs `wsol_jax.predict.predict` on
each folder in a fresh process (and on one large photo alone) and prints that process's peak
resident memory (ru_maxrss), its wall time and the outputs written. Without `--model` the
localiser is the config's networks with freshly initialised weights: memory and time do not
depend on the weights' values (the boxes are then meaningless and are not reported).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def make_localizer(config_spec: str, model: str, batch_size: int):
    """A trained localiser (`model`), or the config's networks freshly initialised."""
    from wsol_jax.localizer import load_localizer

    if model:
        return load_localizer(model, batch_size=batch_size)
    import jax
    from benchmarks.predict_check import load_config
    from wsol_jax.localizer import Localizer, make_spec
    from wsol_jax.models.build import build_classifier, build_weight_map_net

    config = load_config(config_spec)
    n, size = config.data.num_classes, config.data.crop_size
    x = np.zeros((1, size, size, 3), np.float32)
    variables = [
        dict(jax.jit(lambda key, m=m: m.init(key, x, train=False))(jax.random.key(0)))
        for m in (build_weight_map_net(config), build_classifier(config, n))
    ]
    spec = make_spec(
        config, [f'class{k}' for k in range(n)], {'selected_step': 0, 'selected_epoch': 0, 'last_epoch': 0}
    )
    return Localizer(spec, *variables, batch_size=batch_size)


def write_photos(folder: str, n: int, width: int, height: int) -> None:
    """`n` JPEG photos (smooth gradients and a bright disc: they compress as photos do)."""
    os.makedirs(folder, exist_ok=True)
    y, x = np.ogrid[:height, :width]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (x * 255 // max(1, width - 1)).astype(np.uint8)
    image[..., 1] = (y * 255 // max(1, height - 1)).astype(np.uint8)
    image[..., 2] = 96
    disc = (x - width * 0.6) ** 2 + (y - height * 0.4) ** 2 < (min(width, height) * 0.2) ** 2
    image[disc] = 240
    path = os.path.join(folder, '0.jpg')
    Image.fromarray(image).save(path, quality=90)
    del image, disc
    for k in range(1, n):
        shutil.copyfile(path, os.path.join(folder, f'{k}.jpg'))


def child(args) -> None:
    """One measurement in this (fresh) process: prints a JSON line."""
    from wsol_jax.predict import predict

    localizer = make_localizer(args.config, args.model, args.batch_size)
    start = time.time()
    summary = predict(localizer, args.images, args.out, batch_size=args.batch_size)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {
                'peak_rss_mb': round(peak_kib / 1024),
                'wall_s': round(time.time() - start, 1),
                'written': summary['written'],
                'failed': len(summary.get('failed', [])),
            }
        )
    )


def measure(args, images: str, out: str) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        '--child',
        f'--images={images}',
        f'--out={out}',
        f'--config={args.config}',
        f'--model={args.model}',
        f'--batch-size={args.batch_size}',
    ]
    # the children share compiled programs (JAX's persistent cache): only the first one compiles
    env = dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=os.path.join(os.path.dirname(images), 'xla_cache'),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode:
        sys.exit(f'measurement failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default='configs/synthetic.py:method1')
    parser.add_argument('--model', default='')
    parser.add_argument('--n', type=int, default=4)
    parser.add_argument('--large', default='8000x6000')
    parser.add_argument('--small', default='640x480')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--images', default='', help=argparse.SUPPRESS)
    parser.add_argument('--out', default='', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for label, size, n in (('small', args.small, args.n), ('large', args.large, 1), ('large', args.large, args.n)):
            width, height = (int(v) for v in size.split('x'))
            folder = os.path.join(tmp, f'{label}{n}')
            write_photos(folder, n, width, height)
            result = measure(args, folder, os.path.join(tmp, f'out_{label}{n}'))
            runs.append((f'{n} x {size}', width * height * 3 / 2**20, result))
    print(f'predict peak memory (batch_size={args.batch_size}, {args.config if not args.model else args.model}):')
    for name, decoded_mb, r in runs:
        print(
            f'  {name:>16}: peak RSS {r["peak_rss_mb"]:6d} MB  ({decoded_mb:.1f} MB per decoded RGB image; '
            f'{r["wall_s"]} s, {r["written"]} written, {r["failed"]} failed)'
        )


if __name__ == '__main__':
    main()
