"""The training loop shared by every stage: steps, scores, early stopping, resume, checkpoints.

A stage trains for at most `max_epochs` epochs. Every `score_every` steps (by default once an
epoch) it scores the state on the validation split (f: its accuracy; g: the mean containment
score S of Eq. 6), appends the point to its history and saves a checkpoint; checkpoints and the
history are keyed by the global step. Which point a stage keeps is its rule (`Loop.kept`: f the
most accurate, g the selection of `wsol_jax.selection`); with `patience`, training stops once
`patience` scores have passed since the kept point, so the budget follows the data instead of a
fixed epoch count. Only the kept and the latest checkpoints stay on disk.

Re-running a stage resumes after its last checkpoint, mid-epoch included: every epoch's order
and every step's randomness come from `fold_in` of the stage's key, so a resumed run follows the
same path as an uninterrupted one, and a finished stage (stopped or at `max_epochs`) is left as
it is. The loss is checked wherever metrics are read back anyway (every few steps): the first
non-finite value stops the run before anything non-finite is saved.
"""

from __future__ import annotations

import contextlib
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
from wsol_jax.train import checkpoint
from wsol_jax.train.state import TrainState

History = dict[int, dict]  # step -> metrics of that scored point
ScoreFn = Callable[[int, TrainState], dict]  # (step, state) -> validation metrics of the point
KeptFn = Callable[[History], Optional[int]]  # the point a stage keeps under its rule, None if none yet
READ_BACK_EVERY = 10  # steps between metric read-backs (each one synchronises host and device)
HISTORY_FORMAT = 2  # points keyed by step (1: keyed by epoch)


@dataclasses.dataclass
class Loop:
    name: str  # e.g. 'g'; checkpoints go to `directory`
    directory: str
    max_epochs: int
    steps_per_epoch: int
    images_per_step: int
    history_path: str  # JSON of every scored point, kept when checkpoints go
    kept: KeptFn  # the stage's rule: which point it keeps
    score_every: int = 0  # steps between scores; 0: once an epoch
    patience: int = 0  # stop this many scores after the kept point; 0: train max_epochs
    min_steps: int = 0  # the patience stops nothing before this step
    keep_all: bool = False  # keep every checkpoint (default: the kept and the latest)
    ceiling: Optional[tuple[str, float]] = None  # (metric, value): a kept point that reaches it cannot be beaten
    # whether the kept point may end the stage by patience (g: only once its maps localise; a point
    # the run would be refused for is no reason to stop training)
    settled: Optional[Callable[[dict], bool]] = None
    hint: str = ''  # what to try when the loss is not finite
    writer: Optional[object] = None  # tensorboardX SummaryWriter (chief only)

    @property
    def max_steps(self) -> int:
        return self.max_epochs * self.steps_per_epoch

    @property
    def every(self) -> int:
        return self.score_every or self.steps_per_epoch


def score_steps(loop: Loop) -> list[int]:
    """The steps at which `loop` scores: every `every` steps, and the last step."""
    return sorted(set(range(loop.every, loop.max_steps + 1, loop.every)) | {loop.max_steps})


def kept_point(loop: Loop, history: History) -> Optional[int]:
    """The point the stage keeps, or None while no point qualifies (e.g. every map degenerate)."""
    try:
        return loop.kept(history) if history else None
    except TrainingError:
        return None


def finished(loop: Loop, history: History, step: int) -> Optional[str]:
    """Why a stage at `step` with `history` is done ('max_epochs', 'perfect' or 'patience'), or None."""
    if step >= loop.max_steps:
        return 'max_epochs'
    kept = kept_point(loop, history)
    if loop.ceiling and kept is not None and history[kept].get(loop.ceiling[0], -math.inf) >= loop.ceiling[1]:
        return 'perfect'  # e.g. validation accuracy 1: no later point can be kept, waiting is wasted
    if loop.settled is not None and kept is not None and not loop.settled(history[kept]):
        return None
    if not loop.patience or kept is None or step < loop.min_steps:
        return None
    if sum(s > kept for s in history) >= loop.patience:
        return 'patience'
    return None


def _check_finite(loop: Loop, step: int, metrics: dict) -> None:
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise TrainingError(
            f'{loop.name}: non-finite {", ".join(f"{k}={v}" for k, v in bad.items())} at step '
            f'{step} (epoch {step / loop.steps_per_epoch:.2f}); nothing of it was saved. {loop.hint}'
        )


@jax.jit
def _all_finite(tree) -> jax.Array:
    """Whether every float in `tree` is finite: one compiled program per structure (op by op, each
    leaf's shape compiled two small programs of its own, ~2 s of compiles per process on a CPU)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _params_finite(state: TrainState) -> bool:
    return bool(jax.device_get(_all_finite((state.params, state.batch_stats))))


def write_history(path: str, history: History) -> None:
    workdir_lib.write_json(path, {'format': HISTORY_FORMAT, 'points': {str(s): m for s, m in sorted(history.items())}})


def read_history(path: str, latest: int) -> History:
    """`{step: metrics}` of the points up to `latest`, the last step with a checkpoint (a later point
    belongs to a save that was interrupted before its checkpoint was complete)."""
    record = workdir_lib.read_json(path) or {}
    if record and record.get('format') != HISTORY_FORMAT:
        raise WorkdirError(
            f'{path} was written by an older wsol-jax (points keyed by epoch); use a new --workdir, '
            'or --config.overwrite=True to train afresh'
        )
    return {int(s): m for s, m in record.get('points', {}).items() if int(s) <= latest}


@contextlib.contextmanager
def _writing(loop: Loop, step: int):
    """Orbax/TensorStore report a full or read-only disk as OSError, ValueError, ...: one
    `WorkdirError` that says what to do."""
    try:
        yield
    except Exception as e:
        code = workdir_lib.write_errno(e)
        if code in (errno.ENOSPC, errno.EDQUOT):
            raise WorkdirError(
                f'no space left on the device while writing {loop.directory}/{step}; free some '
                f'space and run the same command again (it resumes after the last checkpoint)'
            ) from None
        if code in workdir_lib.WRITE_ERRNOS:
            raise WorkdirError(
                f'cannot write {loop.directory}/{step}: {os.strerror(code)}; make {loop.directory} '
                f'writable and run the same command again (it resumes after the last checkpoint)'
            ) from None
        raise


def _prune(loop: Loop, mgr, keep: set) -> None:
    """Delete the finished checkpoints outside `keep` (nothing is being written)."""
    if not loop.keep_all:
        for old in set(mgr.all_steps()) - keep:
            mgr.delete(old)


def _save(loop: Loop, mgr, step: int, state: TrainState, metrics: dict, history: History) -> None:
    """History first, then the checkpoint, written in the background while training goes on (a
    synchronous write of a small state took ~1 s of Orbax's own work at every scored point). A
    kill at any point leaves a workdir that resumes exactly: a point in the history without its
    finished checkpoint is redone and overwritten, and until step `step` is finished the disk
    keeps what a resume from the previous one needs (that step, and the points kept with and
    without `step`'s score)."""
    previous = {s: m for s, m in history.items() if s != step}
    with _writing(loop, step):
        mgr.wait_until_finished()  # the previous save: delete nothing while a write is running
        _prune(loop, mgr, {mgr.latest_step(), kept_point(loop, previous), kept_point(loop, history)})
        if parallel.is_chief():
            write_history(loop.history_path, history)
        checkpoint.save(mgr, step, state, {'step': step, 'epoch': step / loop.steps_per_epoch, 'metrics': metrics})


def _finish_saves(loop: Loop, mgr, step: int, history: History) -> None:
    """Wait for the last save, then keep only the kept and the latest checkpoints."""
    with _writing(loop, step):
        mgr.wait_until_finished()
    _prune(loop, mgr, {mgr.latest_step(), kept_point(loop, history)})


def _log(loop: Loop, step: int, metrics: dict) -> None:
    if loop.writer is not None:
        for k, v in metrics.items():
            loop.writer.add_scalar(f'{loop.name}/{k}', v, step)
        loop.writer.flush()
    if parallel.is_chief():
        summary = ' '.join(
            f'{k.removeprefix("train/")}={v:.4f}'
            for k, v in metrics.items()
            if not k.endswith('images_per_s') and k != 'epoch'
        )
        print(
            f'[{loop.name}] step {step} (epoch {step / loop.steps_per_epoch:.2f}/{loop.max_epochs}) {summary} '
            f'({metrics.get("train/images_per_s", 0):.0f} img/s)',
            flush=True,
        )


def _train(
    loop: Loop, mgr, state: TrainState, step_fn, batches, rng, score_fn: ScoreFn, history: History, start: int
) -> tuple[TrainState, int]:
    """`run`'s steps and scores from step `start` until `finished`; `history` grows in place.
    Returns the last state and its step."""
    targets = [s for s in score_steps(loop) if s > start]
    step, sums, pending, t0 = start, {}, [], time.perf_counter()
    step_at_t0 = start  # the rate of a point counts the steps since the previous point
    while targets and not finished(loop, history, step):
        epoch, offset = divmod(step, loop.steps_per_epoch)
        epoch_key = jax.random.fold_in(rng, epoch + 1)
        bar = tqdm(
            total=loop.steps_per_epoch,
            initial=offset,
            desc=f'{loop.name} epoch {epoch + 1}/{loop.max_epochs}',
            disable=not parallel.is_chief(),
            leave=False,
            dynamic_ncols=True,
        )
        with contextlib.closing(batches(jax.random.fold_in(epoch_key, 0), skip=offset)) as epoch_batches:
            for i, batch in enumerate(epoch_batches, start=offset):
                state, metrics = step_fn(state, batch, jax.random.fold_in(epoch_key, i + 1))
                step += 1
                pending.append(metrics)
                scoring = step == targets[0]
                if len(pending) >= READ_BACK_EVERY or scoring or i + 1 == loop.steps_per_epoch:
                    # Reading metrics back synchronises; do it every few steps, not every step.
                    for j, m in enumerate(jax.device_get(pending)):
                        m = {k: float(v) for k, v in m.items()}
                        _check_finite(loop, step - len(pending) + j + 1, m)
                        for k, v in m.items():
                            sums[k] = sums.get(k, 0.0) + v
                    sums['_n'] = sums.get('_n', 0) + len(pending)
                    bar.update(len(pending))
                    pending = []
                    rate = (step - step_at_t0) * loop.images_per_step / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(loss=f'{sums.get("loss", 0.0) / sums["_n"]:.4f}', img_s=f'{rate:.0f}')
                if not scoring:
                    continue
                if not _params_finite(state):
                    raise TrainingError(
                        f'{loop.name}: the parameters became non-finite before step {step}; nothing '
                        f'of it was saved. {loop.hint}'
                    )
                n = sums.pop('_n')
                point = {
                    'epoch': step / loop.steps_per_epoch,
                    **{f'train/{k}': v / n for k, v in sums.items()},
                    'train/images_per_s': rate,
                }
                point.update(score_fn(step, state))
                history[step] = point
                _save(loop, mgr, step, state, point, history)
                _log(loop, step, point)
                targets.pop(0)
                sums, t0, step_at_t0 = {}, time.perf_counter(), step
                if not targets or finished(loop, history, step):
                    break
        bar.close()
    return state, step


def run(
    loop: Loop,
    state: TrainState,
    step_fn: Callable,
    batches: Callable[..., Iterator],
    rng: jax.Array,
    score_fn: ScoreFn,
) -> tuple[TrainState, History]:
    """Train `state` with `step_fn(state, batch, rng)` until `finished`; returns the last state and
    the history of scored points.

    `batches(epoch_key, skip=k)` yields the global batches of one epoch from its `k`-th on (a
    resumed epoch skips those it already trained on). At every score step: `score_fn(step,
    state)`, the history, then an Orbax checkpoint.
    """
    mgr = checkpoint.manager(loop.directory)
    start = mgr.latest_step() or 0
    if start > loop.max_steps:
        raise WorkdirError(
            f'{loop.directory} holds {start} steps, more than the {loop.max_steps} of '
            f'{loop.max_epochs} epochs asked for: raise the epochs, or use --config.overwrite=True '
            'to train it afresh'
        )
    history = read_history(loop.history_path, start)
    if start:
        state, _ = checkpoint.restore(mgr, start, state)
        why = finished(loop, history, start)
        print(
            f'[{loop.name}] {f"finished ({why})" if why else "resuming"} at step {start} '
            f'(epoch {start / loop.steps_per_epoch:.2f}) in {loop.directory}'
        )
    try:
        state, step = _train(loop, mgr, state, step_fn, batches, rng, score_fn, history, start)
    except BaseException:
        # An error or Ctrl-C between scores: the checkpoint being written finishes first, so
        # that the same command resumes from it.
        with contextlib.suppress(Exception):
            _finish_saves(loop, mgr, mgr.latest_step() or 0, history)
        raise
    why = finished(loop, history, step)
    if why in ('patience', 'perfect') and parallel.is_chief():
        kept = kept_point(loop, history)
        reason = (
            f'{loop.patience} scores since the kept step {kept} (epoch {kept / loop.steps_per_epoch:.2f})'
            if why == 'patience'
            else f'{loop.ceiling[0]} reached {loop.ceiling[1]:g}, nothing can beat it'
        )
        print(f'[{loop.name}] stopped at step {step} (epoch {step / loop.steps_per_epoch:.2f}): {reason}')
    _finish_saves(loop, mgr, step, history)
    return state, history
