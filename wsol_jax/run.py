"""Runs the stages of the method on a workdir: train_f -> train_g -> select -> evaluate.

Each stage reads what the previous one wrote, so any stage can be re-run alone, and re-running
an interrupted stage resumes from its last complete checkpoint.
"""
from __future__ import annotations

import json
import os
import time

import jax

from wsol_jax import config as config_lib
from wsol_jax import evaluate as evaluate_lib
from wsol_jax import parallel, report
from wsol_jax.data import load_dataset
from wsol_jax.errors import WorkdirError
from wsol_jax.train import stages

STAGES = ('train_f', 'train_g', 'select', 'evaluate')


def prepare_workdir(workdir: str) -> str:
    workdir = os.path.abspath(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f'.write_test_{os.getpid()}')
        with open(probe, 'w') as fh:
            fh.write('ok')
        os.remove(probe)
    except OSError as e:
        raise WorkdirError(f'cannot write to workdir {workdir}: {e.strerror}; choose another --workdir') from None
    return workdir


def _writer(workdir: str):
    if not parallel.is_chief():
        return None
    from tensorboardX import SummaryWriter
    return SummaryWriter(os.path.join(workdir, 'tensorboard'))


def run(config, workdir: str, stage: str = 'all') -> dict:
    """Run one stage or all of them; returns the evaluation results when it evaluates."""
    config_lib.validate(config)
    if stage != 'all' and stage not in STAGES:
        raise ValueError(f'unknown stage {stage!r}; choose all or one of {STAGES}')
    workdir = prepare_workdir(workdir)
    if jax.config.jax_compilation_cache_dir is None:
        # Re-running a stage (resume, evaluate again) reuses compiled programs instead of
        # spending minutes in XLA on a CPU.
        jax.config.update('jax_compilation_cache_dir', os.path.join(workdir, 'xla_cache'))
    if parallel.is_chief():
        with open(os.path.join(workdir, 'config.json'), 'w') as fh:
            json.dump(config.to_dict(), fh, indent=1, default=str)
    t0 = time.perf_counter()
    data = load_dataset(config, cache_dir=os.path.join(workdir, 'data_cache'))
    print(f'[data] {config.data.source}: train {len(data.train)}, val {len(data.val)}, test {len(data.test)} '
          f'images, {data.num_classes} classes ({time.perf_counter() - t0:.1f} s); '
          f'{jax.device_count()} {jax.devices()[0].platform} device(s), {jax.process_count()} host(s)')
    ctx = stages.Context(config, workdir, data, parallel.make_mesh(), _writer(workdir))
    timings, results = _load_timings(workdir), {}
    todo = STAGES if stage == 'all' else (stage,)
    for name in todo:
        t0 = time.perf_counter()
        if name == 'train_f':
            stages.train_f(ctx)
        elif name == 'train_g':
            stages.train_g(ctx)
        elif name == 'select':
            stages.select(ctx)
        else:
            results, samples = evaluate_lib.evaluate(ctx)
        timings[name] = round(time.perf_counter() - t0, 1)
        _save_timings(workdir, timings)
        if name == 'evaluate' and parallel.is_chief():
            report.write(workdir, config, results, stages.load_selection(ctx), samples, data, timings)
            print(f'[report] {os.path.join(workdir, "results.md")}\n' +
                  open(os.path.join(workdir, 'results.md')).read())
    if ctx.writer is not None:
        ctx.writer.close()
    return results


def _load_timings(workdir: str) -> dict:
    path = os.path.join(workdir, 'timings.json')
    if not os.path.exists(path):
        return {}
    with open(path) as fh:
        return json.load(fh)


def _save_timings(workdir: str, timings: dict) -> None:
    if parallel.is_chief():
        with open(os.path.join(workdir, 'timings.json'), 'w') as fh:
            json.dump(timings, fh)
