"""Peak host memory of the input pipeline against the number of training images.

    python benchmarks/input_memory.py --sizes=2000,40000 --image_size=32 --cache_dir=/tmp/wsol_mem

For each size, two fresh processes: one generates the synthetic training split into the record
cache (`load_dataset`, as `main.py` does), one streams a whole epoch of it to the device through
the training pipeline (`classification_batches`: shuffle, Grain reader threads, sharded device
batches) and then one ordered evaluation pass (`map_split`). Each prints its peak resident set
size (`ru_maxrss`); images/s are `throughput.py --what=input`'s job. With a streaming pipeline the peaks
do not grow with the number of images (the in-memory cache of earlier versions grew by
`N * S * S * 3` bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(n: int, image_size: int, cache_dir: str):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs'))
    import synthetic

    c = synthetic.get_config('method1')
    c.data.update(
        dict(num_train=n, num_val=64, num_test=64, image_size=image_size, crop_size=image_size, cache_dir=cache_dir)
    )
    return c


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def child(what: str, n: int, image_size: int, cache_dir: str, batch: int) -> dict:
    import jax
    from wsol_jax import parallel
    from wsol_jax.data import load_dataset
    from wsol_jax.data.pipeline import classification_batches, map_split

    base = peak_rss_mb()
    t0 = time.perf_counter()
    data = load_dataset(_config(n, image_size, cache_dir))
    out = {'what': what, 'num_train': n, 'rss_after_imports_mb': round(base, 1)}
    if what == 'build':
        out.update(build_s=round(time.perf_counter() - t0, 1), peak_rss_mb=round(peak_rss_mb(), 1))
        return out
    mesh = parallel.make_mesh()
    seen = 0
    for b in classification_batches(data.train, batch, mesh, jax.random.key(0)):
        seen += b['image'].shape[0]
        jax.block_until_ready(b['image'])
    for (out_images,), valid in map_split(lambda b: b['image'], data.train, batch, mesh):
        jax.block_until_ready(out_images)
    out.update(images=seen, peak_rss_mb=round(peak_rss_mb(), 1))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--sizes', default='2000,40000')
    p.add_argument('--image_size', type=int, default=32)
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--cache_dir', default='/tmp/wsol_input_memory')
    p.add_argument('--child', default='')
    args = p.parse_args()
    if args.child:
        what, n = args.child.split(':')
        print(json.dumps(child(what, int(n), args.image_size, args.cache_dir, args.batch)))
        return
    rows = []
    for n in map(int, args.sizes.split(',')):
        row = {}
        for what in ('build', 'read'):
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    f'--child={what}:{n}',
                    f'--image_size={args.image_size}',
                    f'--cache_dir={args.cache_dir}',
                    f'--batch={args.batch}',
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            row[what] = result
        rows.append(row)
        print(
            f'n={n}: build peak {row["build"]["peak_rss_mb"]} MB ({row["build"].get("build_s")} s), '
            f'read peak {row["read"]["peak_rss_mb"]} MB, after imports {row["read"]["rss_after_imports_mb"]} MB'
        )
    if len(rows) > 1:
        for what in ('build', 'read'):
            a, b = rows[0][what]['peak_rss_mb'], rows[-1][what]['peak_rss_mb']
            print(
                f'{what}: peak {a} MB at {rows[0][what]["num_train"]} -> {b} MB at {rows[-1][what]["num_train"]} '
                f'images ({100 * (b - a) / a:+.1f} %)'
            )


if __name__ == '__main__':
    main()
