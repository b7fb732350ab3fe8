"""Evaluation speed on 1 and 2 cores: the MaxBoxAcc contour work alone, and the whole evaluate stage.

    python benchmarks/eval_speed.py [--workdir=runs/demo --config=configs/synthetic.py:method1] [--maps=200]

1. Contours alone: `--maps` random-blob maps at 224 px (the paper's crop), MaxBoxAcc v1 + V2 over
   100 thresholds, in-line (one core) and on 2 worker processes: maps/s.
2. With `--workdir` (a finished run): `main.py --stage=evaluate` pinned to one core (`taskset -c 0`,
   `eval.num_workers=1`) and to two (`taskset -c 0,1`, `eval.num_workers=2`): test images/s of the
   whole stage (three variants: selected g, last g, CAM; device work, contours, report), from
   the stage's own timing in timings.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from wsol_jax import metrics  # noqa: E402


def blob_maps(n: int, size: int = 224, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth maps with one or two blobs, and a box around the first."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[:size, :size]
    maps, boxes = [], []
    for _ in range(n):
        m = np.zeros((size, size), np.float32)
        for _ in range(rng.integers(1, 3)):
            cy, cx, r = rng.uniform(40, size - 40, 2).tolist() + [rng.uniform(15, 50)]
            m += np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * r * r)).astype(np.float32)
        m += 0.05 * rng.random((size, size)).astype(np.float32)
        maps.append(m / m.max())
        boxes.append([[max(0, cx - 2 * r), max(0, cy - 2 * r), min(size - 1, cx + 2 * r), min(size - 1, cy + 2 * r)]])
    return np.stack(maps), np.asarray(boxes, np.int32)


def contour_rate(maps, boxes, workers: int) -> float:
    t0 = time.perf_counter()
    if workers <= 1:
        acc = metrics.MaxBoxAccAccumulator()
        acc.update(maps, boxes)
        acc.result()
    else:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as pool:
            list(pool.map(abs, range(workers)))  # start the workers outside the timing
            t0 = time.perf_counter()
            acc = metrics.MaxBoxAccAccumulator(executor=pool)
            acc.update(maps, boxes)
            acc.result()
    return len(maps) / (time.perf_counter() - t0)


def stage_rate(workdir: str, config: str, cores: str, workers: int) -> tuple[float, float]:
    """Test images/s of `--stage=evaluate` pinned to `cores`; returns (images/s, seconds)."""
    cmd = [
        'taskset',
        '-c',
        cores,
        sys.executable,
        os.path.join(ROOT, 'main.py'),
        f'--config={config}',
        f'--workdir={workdir}',
        '--stage=evaluate',
        f'--config.eval.num_workers={workers}',
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    timings = json.load(open(os.path.join(workdir, 'timings.json')))
    seconds = timings['runs'][-1]['seconds']['evaluate']
    n_test = json.load(open(os.path.join(workdir, 'results.json')))['config']['data'].get('num_test') or 0
    return n_test / seconds, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--maps', type=int, default=200)
    parser.add_argument('--workdir', default='')
    parser.add_argument('--config', default='configs/synthetic.py:method1')
    args = parser.parse_args()
    maps, boxes = blob_maps(args.maps)
    contour_rate(maps[:4], boxes[:4], 1)  # warm-up
    one, two = contour_rate(maps, boxes, 1), contour_rate(maps, boxes, 2)
    print(
        f'MaxBoxAcc contours (v1 + V2, 100 thresholds, 224 px): 1 core {one:.1f} maps/s, '
        f'2 processes {two:.1f} maps/s (x{two / one:.2f})'
    )
    if args.workdir:
        if not shutil.which('taskset'):
            raise SystemExit('taskset (util-linux) is needed to pin the evaluation to 1 and 2 cores')
        rate1, s1 = stage_rate(args.workdir, args.config, '0', 1)
        rate2, s2 = stage_rate(args.workdir, args.config, '0,1', 2)
        print(
            f'whole evaluate stage ({args.workdir}): 1 core {rate1:.1f} test images/s ({s1:.1f} s), '
            f'2 cores {rate2:.1f} test images/s ({s2:.1f} s) (x{rate2 / rate1:.2f})'
        )


if __name__ == '__main__':
    main()
