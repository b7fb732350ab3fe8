"""The epoch loop shared by every training stage: resume, progress, logging, checks, checkpoints.

Re-running a stage on a workdir with checkpoints resumes after the last complete epoch; every
epoch's randomness is `fold_in(rng, epoch)`, so a resumed run follows the same path as an
uninterrupted one. The loss is checked wherever metrics are read back anyway (every few steps):
the first non-finite value stops the run before anything non-finite is saved.
"""
from __future__ import annotations

import dataclasses
import errno
import math
import os
import time
from typing import Callable, Iterator, Optional

import jax
import jax.numpy as jnp
from tqdm import tqdm

from wsol_jax import parallel, workdir as workdir_lib
from wsol_jax.errors import TrainingError, WorkdirError
from wsol_jax.selection import select_epoch
from wsol_jax.train import checkpoint
from wsol_jax.train.state import TrainState

# (epoch, state) -> (metrics to log and rank by, JSON metadata to store with the checkpoint)
EpochEnd = Callable[[int, TrainState], tuple[dict, dict]]
READ_BACK_EVERY = 10   # steps between metric read-backs (each one synchronises host and device)


@dataclasses.dataclass
class Loop:
    name: str                      # e.g. 'g'; checkpoints go to `directory`
    directory: str
    epochs: int
    steps_per_epoch: int
    images_per_step: int
    history_path: str              # JSON {epoch: metrics} of every epoch, kept when checkpoints go
    keep: str = 'latest'           # 'latest' | 'selected_and_latest' (by mean S) | 'all'
    hint: str = ''                 # what to try when the loss is not finite
    writer: Optional[object] = None  # tensorboardX SummaryWriter (chief only)
    selection_se: float = 1.0      # 'selected_and_latest': the selection's tolerance (selection.select_epoch)


def _check_finite(loop: Loop, epoch: int, step: int, metrics: dict) -> None:
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise TrainingError(f'{loop.name}: non-finite {", ".join(f"{k}={v}" for k, v in bad.items())} at epoch '
                            f'{epoch}, step {step}; nothing of this epoch was saved. {loop.hint}')


def _params_finite(state: TrainState) -> bool:
    leaves = jax.tree.leaves((state.params, state.batch_stats))
    return bool(jax.device_get(jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))))


def _kept_epochs(loop: Loop, history: dict[int, dict], latest: int) -> set[int]:
    if loop.keep == 'latest':
        return {latest}
    try:
        return {latest, select_epoch(history, standard_errors=loop.selection_se)}
    except TrainingError:   # no epoch localises yet
        return {latest}


def _save(loop: Loop, mgr, epoch: int, state: TrainState, metrics: dict, history: dict) -> None:
    """History first, then the checkpoint, then the epochs that are no longer needed: a kill at
    any point leaves a workdir that resumes exactly (an epoch in the history without its
    checkpoint is redone and overwritten)."""
    try:
        if parallel.is_chief():
            workdir_lib.write_json(loop.history_path, {str(e): m for e, m in sorted(history.items())})
        checkpoint.save(mgr, epoch, state, {'epoch': epoch, 'metrics': metrics})
        mgr.wait_until_finished()
    except Exception as e:   # Orbax/TensorStore report a full disk as OSError, ValueError, ...
        code = workdir_lib.write_errno(e)
        if code in (errno.ENOSPC, errno.EDQUOT):
            raise WorkdirError(f'no space left on the device while writing {loop.directory}/{epoch}; free some '
                               f'space and run the same command again (it resumes after epoch {epoch - 1})') from None
        if code in workdir_lib.WRITE_ERRNOS:
            raise WorkdirError(f'cannot write {loop.directory}/{epoch}: {os.strerror(code)}; make {loop.directory} '
                               f'writable and run the same command again (it resumes after epoch {epoch - 1})'
                               ) from None
        raise
    if loop.keep != 'all':
        for old in set(mgr.all_steps()) - _kept_epochs(loop, history, epoch):
            mgr.delete(old)


def read_history(path: str, latest: int) -> dict[int, dict]:
    """`{epoch: metrics}` of the epochs up to `latest`, the last one with a checkpoint (a later
    entry belongs to an epoch that was interrupted before its checkpoint was complete)."""
    return {int(e): m for e, m in (workdir_lib.read_json(path) or {}).items() if int(e) <= latest}


def run(loop: Loop, state: TrainState, step_fn: Callable, batches: Callable[[jax.Array], Iterator],
        rng: jax.Array, epoch_end: Optional[EpochEnd] = None) -> TrainState:
    """Train `state` for `loop.epochs` epochs with `step_fn(state, batch, rng)`.

    `batches(epoch_key)` yields the global batches of one epoch. After each epoch: `epoch_end`
    (e.g. the mean S on the validation split), the history, then an Orbax checkpoint.
    """
    mgr = checkpoint.manager(loop.directory)
    start = mgr.latest_step() or 0
    if start > loop.epochs:
        raise WorkdirError(f'{loop.directory} holds {start} epochs, more than the {loop.epochs} asked for: set the '
                           f'epochs to {start} or more, or use --config.overwrite=True to train it afresh')
    history = read_history(loop.history_path, start)
    if start:
        state, _ = checkpoint.restore(mgr, start, state)
        print(f'[{loop.name}] resuming after epoch {start}/{loop.epochs} from {loop.directory}')
    for epoch in range(start + 1, loop.epochs + 1):
        epoch_key = jax.random.fold_in(rng, epoch)
        sums: dict[str, float] = {}
        bar = tqdm(total=loop.steps_per_epoch, desc=f'{loop.name} epoch {epoch}/{loop.epochs}',
                   disable=not parallel.is_chief(), leave=False, dynamic_ncols=True)
        t0, pending, done = time.perf_counter(), [], 0
        for i, batch in enumerate(batches(jax.random.fold_in(epoch_key, 0))):
            state, metrics = step_fn(state, batch, jax.random.fold_in(epoch_key, i + 1))
            pending.append(metrics)
            if len(pending) >= READ_BACK_EVERY or i + 1 == loop.steps_per_epoch:
                # Reading metrics back synchronises; do it every few steps, not every step.
                for j, m in enumerate(jax.device_get(pending)):
                    m = {k: float(v) for k, v in m.items()}
                    _check_finite(loop, epoch, i + 2 - len(pending) + j, m)
                    for k, v in m.items():
                        sums[k] = sums.get(k, 0.0) + v
                bar.update(len(pending))
                done += len(pending)
                pending = []
                seen = max(1, done)
                bar.set_postfix(loss=f'{sums["loss"] / seen:.4f}',
                                img_s=f'{seen * loop.images_per_step / (time.perf_counter() - t0):.0f}')
        bar.close()
        if not _params_finite(state):
            raise TrainingError(f'{loop.name}: the parameters became non-finite in epoch {epoch}; nothing of this '
                                f'epoch was saved. {loop.hint}')
        n_steps = max(1, done)
        train_metrics = {f'train/{k}': v / n_steps for k, v in sums.items()}
        train_metrics['train/images_per_s'] = n_steps * loop.images_per_step / (time.perf_counter() - t0)
        extra, _ = epoch_end(epoch, state) if epoch_end else ({}, {})
        metrics = {**train_metrics, **extra}
        history[epoch] = metrics
        _save(loop, mgr, epoch, state, metrics, history)
        if loop.writer is not None:
            for k, v in metrics.items():
                loop.writer.add_scalar(f'{loop.name}/{k}', v, epoch)
            loop.writer.flush()
        summary = ' '.join(f'{k.split("/")[-1]}={v:.4f}' for k, v in metrics.items()
                           if not k.endswith('images_per_s'))
        if parallel.is_chief():
            print(f'[{loop.name}] epoch {epoch}/{loop.epochs} {summary} '
                  f'({train_metrics["train/images_per_s"]:.0f} img/s)', flush=True)
    mgr.wait_until_finished()
    return state
