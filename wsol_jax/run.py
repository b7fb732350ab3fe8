"""Runs the stages of the method on a workdir: train_f -> train_g -> select -> evaluate, or one
stage (export and predict included), through the table `wsol_jax.stages.STAGES`.

Each stage reads what the previous one wrote, so any stage can be re-run alone, and re-running
an interrupted stage resumes from its last complete checkpoint. Before anything runs, the
workdir's checkpoints are checked against the config (`wsol_jax.workdir`) and everything the
run will need is checked (`wsol_jax.checks`). A command holds the workdir's lock
(`wsol_jax.lock.locked`) from start to end: a second one on the same workdir stops at once.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time

import jax

from wsol_jax import checks, config as config_lib, lock, parallel, stages as stages_lib, workdir as workdir_lib
from wsol_jax.context import Context
from wsol_jax.data import load_dataset
from wsol_jax.errors import WorkdirError
from wsol_jax.stages import Stage


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


def trained_stages(config) -> tuple[str, ...]:
    """The stage folders this config trains, in order."""
    return workdir_lib.f_networks(config) + (workdir_lib.G,)


def run(config, workdir: str, stage: str = 'all') -> dict:
    """Run one stage or all of them; returns the evaluation results when it evaluates.
    `config.dtype='float64'` runs it in JAX's 64-bit mode (numerical checks)."""
    config_lib.validate(config)
    with jax.enable_x64(True) if config.dtype == 'float64' else contextlib.nullcontext():
        return _run(config, workdir, stage)


def _run(config, workdir: str, name: str) -> dict:
    todo = stages_lib.ALL if name == 'all' else (stages_lib.get(name),)
    if not todo[0].needs_data:
        stage = todo[0]
        if stage.model_key and _writes_into_workdir(config, workdir, stage):
            os.makedirs(workdir, exist_ok=True)  # predict's outputs go there (its model may not): lock it
        with lock.locked(workdir) if _uses_workdir(config, workdir, stage) else contextlib.nullcontext():
            return _use(config, workdir, stage)
    workdir = prepare_workdir(workdir)
    with lock.locked(workdir):
        return _run_stages(config, workdir, todo)


def _config_value(config, key: str) -> str:
    """`config` at the dotted `key` ('' for no key)."""
    for part in key.split('.') if key else ():
        config = config[part]
    return config if key else ''


def _writes_into_workdir(config, workdir: str, stage: Stage) -> bool:
    out = _config_value(config, stage.out_key)
    return not out or workdir_lib.inside(out, workdir)


def _uses_workdir(config, workdir: str, stage: Stage) -> bool:
    """Whether a stage that uses a trained run reads or writes the workdir (export always reads
    its checkpoints; predict with an export elsewhere and its outputs elsewhere does not touch it)."""
    model = _config_value(config, stage.model_key)
    return not model or workdir_lib.inside(model, workdir) or _writes_into_workdir(config, workdir, stage)


def _run_stages(config, workdir: str, todo: tuple[Stage, ...]) -> dict:
    workdir_lib.check(workdir, config, trained_stages(config))
    if jax.config.jax_compilation_cache_dir is None:
        # Re-running a stage (resume, evaluate again) reuses compiled programs instead of
        # spending minutes in XLA on a CPU.
        jax.config.update('jax_compilation_cache_dir', os.path.join(workdir, 'xla_cache'))
    t0 = time.perf_counter()
    cache_dir = config.data.cache_dir or os.path.join(workdir, 'data_cache')
    with workdir_lib.writing(cache_dir, 'the data cache', '--config.data.cache_dir'):
        data = load_dataset(config, cache_dir=cache_dir)
    print(
        f'[data] {config.data.source}: train {len(data.train)}, val {len(data.val)}, test {len(data.test)} '
        f'images, {data.num_classes} classes ({time.perf_counter() - t0:.1f} s); '
        f'{jax.device_count()} {jax.devices()[0].platform} device(s), {jax.process_count()} host(s)'
    )
    mesh = parallel.make_mesh()
    checks.check_run(config, data, mesh, tuple(s.name for s in todo))
    if parallel.is_chief():
        workdir_lib.write_json(os.path.join(workdir, workdir_lib.CONFIG), config.to_dict())
        workdir_lib.write_json(
            os.path.join(workdir, workdir_lib.CLASSES),
            {'num_classes': data.num_classes, 'names': data.names_of_classes()},
        )
    ctx = Context(config, workdir, data, mesh, _writer(workdir))
    timings, results = {}, {}
    started = datetime.datetime.now().isoformat(timespec='seconds')
    try:
        for stage in todo:
            t0 = time.perf_counter()
            output = stage.function()(ctx)
            timings[stage.name] = round(time.perf_counter() - t0, 1)
            all_timings = _add_timings(workdir, started, timings)
            if stage.reports:  # after the time is recorded: the report lists it
                results = stage.report_function()(ctx, output, all_timings)
    except BaseException:
        if ctx.writer is not None:
            with contextlib.suppress(OSError):  # a full disk must not hide the error that stopped the run
                ctx.writer.close()
        raise
    if ctx.writer is not None:
        ctx.writer.close()
    return results


def _use(config, workdir: str, stage: Stage) -> dict:
    """A stage that uses a trained run (export, predict): only the process of rank 0 writes."""
    if not parallel.is_chief():
        return {}
    return stage.function()(config, workdir)


def _add_timings(workdir: str, started: str, timings: dict) -> dict:
    """Accumulate wall times over invocations: `{'runs': [...], 'total_s': {stage: seconds}}`."""
    path = os.path.join(workdir, workdir_lib.TIMINGS)
    record = workdir_lib.read_json(path, {})
    if 'runs' not in record:  # older format: one flat {stage: seconds}
        record = {'runs': [{'started': None, 'seconds': record}] if record else []}
    runs = [r for r in record['runs'] if r.get('started') != started or started is None] + [
        {'started': started, 'seconds': dict(timings)}
    ]
    total: dict[str, float] = {}
    for r in runs:
        for k, v in r['seconds'].items():
            total[k] = round(total.get(k, 0.0) + v, 1)
    record = {'runs': runs, 'total_s': total}
    if parallel.is_chief():
        workdir_lib.write_json(path, record)
    return record
