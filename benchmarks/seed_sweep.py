"""Run the whole method for several seeds and report the median and the worst seed.

    python benchmarks/seed_sweep.py --config=configs/synthetic.py:method1 --seeds=0,1,2,3,4 \
        --workdir=runs/sweep_m1 [-- --config.g.max_epochs=10 ...]

Each seed is one `main.py` run in `<workdir>/seed<N>` (an interrupted sweep resumes: finished
seeds are read back, not rerun). Prints a Markdown table of GT-known loc, Top-1 loc, PxAP, the
CAM baseline, the selection regret and the wall time per seed, with the median and the worst, and
writes it to `<workdir>/sweep.md` and `<workdir>/sweep.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAN = float('nan')


def _metric(r: dict, variant: str, key: str) -> float:
    """A metric of results.json; NaN where the run has none (no masks: PxAP; an f without a class
    head or without CAM: Top-1 and the CAM row, `not_defined` in results.json)."""
    return r['results'].get(variant, {}).get(key, NAN)


def _f_accuracy(r: dict) -> float:
    """The validation accuracy of the classifier f, or of the encoder f where there is none."""
    quality = r['f_quality'].get('f_classifier') or r['f_quality'].get('f_encoder') or {}
    return quality.get('val_accuracy', NAN)


COLUMNS = (
    ('GT-known loc', lambda r: _metric(r, 'weight_map_selected', 'gt_known_loc')),
    ('Top-1 loc', lambda r: _metric(r, 'weight_map_selected', 'top1_loc')),
    ('Top-1 cls', lambda r: _metric(r, 'weight_map_selected', 'top1_cls')),
    ('PxAP', lambda r: _metric(r, 'weight_map_selected', 'pxap')),
    ('CAM GT-known', lambda r: _metric(r, 'cam', 'gt_known_loc')),
    ('last epoch GT-known', lambda r: _metric(r, 'weight_map_last', 'gt_known_loc')),
    ('regret (val)', lambda r: (r.get('selection_regret') or {}).get('regret', NAN)),
    ('f val acc', _f_accuracy),
)


def stopped(r: dict) -> str:
    """Where the budgets ended, in epochs: f kept / stopped (each f network), g selected / stopped."""
    fs = ', '.join(f'{q["kept_epoch"]:.1f} / {q["last_epoch"]:.1f}' for q in r['f_quality'].values())
    return f'{fs} | {r["selected_epoch"]:.2f} / {r["last_epoch"]:.2f} ({r.get("g_stopped")})'


def run_seed(config: str, seed: int, workdir: str, extra: list[str]) -> dict:
    results = os.path.join(workdir, 'results.json')
    if not os.path.exists(results):
        t0 = time.perf_counter()
        cmd = [
            sys.executable,
            os.path.join(ROOT, 'main.py'),
            f'--config={config}',
            f'--workdir={workdir}',
            f'--config.seed={seed}',
            *extra,
        ]
        print(f'[sweep] seed {seed}: {" ".join(cmd[1:])}', flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            return {'seed': seed, 'error': lines[-1] if lines else f'exit status {proc.returncode}'}
        with open(os.path.join(workdir, 'wall_s.json'), 'w') as fh:
            json.dump(time.perf_counter() - t0, fh)
    with open(results) as fh:
        record = json.load(fh)
    wall = os.path.join(workdir, 'wall_s.json')
    record['wall_s'] = json.load(open(wall)) if os.path.exists(wall) else float('nan')
    return record


def table(records: list[dict]) -> str:
    ok = [r for r in records if 'error' not in r]
    head = (
        '| seed | '
        + ' | '.join(name for name, _ in COLUMNS)
        + ' | f kept / stopped (epoch) | g selected / stopped | wall |'
    )
    lines = [head, '|---' * (len(COLUMNS) + 4) + '|']
    for r in records:
        if 'error' in r:
            lines.append(f'| {r["seed"]} | failed: {r["error"]} |')
            continue
        cells = [f'{100 * get(r):.1f}' for _, get in COLUMNS]
        lines.append(f'| {r["seed"]} | ' + ' | '.join(cells) + f' | {stopped(r)} | {r["wall_s"] / 60:.1f} min |')
    if ok:
        for label, pick in (('median', statistics.median), ('worst', min)):
            cells = []
            for name, get in COLUMNS:
                values = [get(r) for r in ok]
                # The worst regret and wall time are the largest; of every score (CAM's too), the smallest.
                worst = max if name.startswith('regret') and label == 'worst' else pick
                values = [v for v in values if v == v] or [float('nan')]  # NaN: no boxes / no masks
                cells.append(f'{100 * worst(values):.1f}')
            walls = [r['wall_s'] for r in ok]
            lines.append(
                f'| **{label}** | ' + ' | '.join(cells) + ' | | | '
                f'{(statistics.median(walls) if label == "median" else max(walls)) / 60:.1f} min |'
            )
    return '\n'.join(lines) + '\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', required=True)
    parser.add_argument('--seeds', default='0,1,2,3,4,5,6,7,8,9')
    parser.add_argument('--workdir', required=True)
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != '--']
    records = [
        run_seed(args.config, int(s), os.path.join(args.workdir, f'seed{s}'), extra) for s in args.seeds.split(',')
    ]
    text = f'`{args.config}` {" ".join(extra)}, metrics in %\n\n' + table(records)
    print(text)
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, 'sweep.md'), 'w') as fh:
        fh.write(text)
    with open(os.path.join(args.workdir, 'sweep.json'), 'w') as fh:
        json.dump([{k: v for k, v in r.items() if k not in ('history', 'config')} for r in records], fh, indent=1)


if __name__ == '__main__':
    main()
