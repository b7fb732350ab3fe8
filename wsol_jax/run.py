"""Runs the stages of the method on a workdir: train_f -> train_g -> select -> evaluate.

Each stage reads what the previous one wrote, so any stage can be re-run alone, and re-running
an interrupted stage resumes from its last complete checkpoint. Before anything runs, the
workdir's checkpoints are checked against the config (`wsol_jax.workdir`) and everything the
run will need is checked (`wsol_jax.checks`). A command holds the workdir's lock
(`wsol_jax.workdir.locked`) from start to end: a second one on the same workdir stops at once.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time

import jax

from wsol_jax import checks, config as config_lib, evaluate as evaluate_lib, methods
from wsol_jax import parallel, report, select, workdir as workdir_lib
from wsol_jax.context import Context
from wsol_jax.data import load_dataset
from wsol_jax.errors import WorkdirError
from wsol_jax.train import stages

STAGES = ('train_f', 'train_g', 'select', 'evaluate')
USE_STAGES = ('export', 'predict')  # use a trained run; need neither the data nor a device mesh


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
    return methods.f_networks(config) + (workdir_lib.G,)


def run(config, workdir: str, stage: str = 'all') -> dict:
    """Run one stage or all of them; returns the evaluation results when it evaluates.
    `config.dtype='float64'` runs it in JAX's 64-bit mode (numerical checks)."""
    config_lib.validate(config)
    with jax.enable_x64(True) if config.dtype == 'float64' else contextlib.nullcontext():
        return _run(config, workdir, stage)


def _run(config, workdir: str, stage: str) -> dict:
    if stage != 'all' and stage not in STAGES + USE_STAGES:
        raise ValueError(f'unknown stage {stage!r}; choose all or one of {STAGES + USE_STAGES}')
    if stage in USE_STAGES:
        if stage == 'predict' and _writes_into_workdir(config, workdir, stage):
            os.makedirs(workdir, exist_ok=True)  # predictions/ goes there: lock it
        with workdir_lib.locked(workdir) if _uses_workdir(config, workdir, stage) else contextlib.nullcontext():
            return _use(config, workdir, stage)
    workdir = prepare_workdir(workdir)
    with workdir_lib.locked(workdir):
        return _run_stages(config, workdir, STAGES if stage == 'all' else (stage,))


def _writes_into_workdir(config, workdir: str, stage: str) -> bool:
    out = config.export.dir if stage == 'export' else config.predict.out
    return not out or workdir_lib.inside(out, workdir)


def _uses_workdir(config, workdir: str, stage: str) -> bool:
    """Whether export / predict read or write the workdir (export always reads its checkpoints;
    predict with an export elsewhere and its outputs elsewhere does not touch it)."""
    model = config.predict.model if stage == 'predict' else ''
    return (
        stage == 'export'
        or not model
        or workdir_lib.inside(model, workdir)
        or _writes_into_workdir(config, workdir, stage)
    )


def _run_stages(config, workdir: str, todo: tuple[str, ...]) -> dict:
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
    checks.check_run(config, data, mesh, todo)
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
        for name in todo:
            t0 = time.perf_counter()
            if name == 'train_f':
                stages.train_f(ctx)
            elif name == 'train_g':
                stages.train_g(ctx)
            elif name == 'select':
                select.select(ctx)
            else:
                results, samples = evaluate_lib.evaluate(ctx)
            timings[name] = round(time.perf_counter() - t0, 1)
            all_timings = _add_timings(workdir, started, timings)
            if name == 'evaluate' and parallel.is_chief():
                report.write(workdir, config, results, select.load_selection(workdir), samples, data, all_timings)
                print(
                    f'[report] {os.path.join(workdir, "results.md")}\n'
                    + open(os.path.join(workdir, 'results.md')).read()
                )
            if name == 'evaluate':  # after the report, so that what went wrong can be looked at
                select.check_selected_maps(select.load_selection(workdir), config.eval.max_bad_maps)
    except BaseException:
        if ctx.writer is not None:
            with contextlib.suppress(OSError):  # a full disk must not hide the error that stopped the run
                ctx.writer.close()
        raise
    if ctx.writer is not None:
        ctx.writer.close()
    return results


def _use(config, workdir: str, stage: str) -> dict:
    """export / predict: only the process of rank 0 writes."""
    from wsol_jax import predict as predict_lib
    from wsol_jax.localizer import Localizer

    if not parallel.is_chief():
        return {}
    if stage == 'export':
        out = Localizer.from_workdir(workdir).export(config.export.dir or os.path.join(workdir, workdir_lib.EXPORT))
        print(
            f'[export] {out}: load it with wsol_jax.load_localizer({out!r}) or '
            f'--stage=predict --config.predict.model={out}'
        )
        return {'export': out}
    out = config.predict.out or os.path.join(workdir, workdir_lib.PREDICTIONS)
    with workdir_lib.writing(out, 'the predictions to', '--config.predict.out'):
        return predict_lib.run_predict(config, workdir)


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
