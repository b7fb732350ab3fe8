"""The epoch loop shared by every training stage: resume, progress, logging, checkpoints.

Re-running a stage on a workdir with checkpoints resumes after the last complete epoch; every
epoch's randomness is `fold_in(rng, epoch)`, so a resumed run follows the same path as an
uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterator, Optional

import jax
from tqdm import tqdm

from wsol_jax import parallel
from wsol_jax.train import checkpoint
from wsol_jax.train.state import TrainState

# (epoch, state) -> (metrics to log and rank by, JSON metadata to store with the checkpoint)
EpochEnd = Callable[[int, TrainState], tuple[dict, dict]]


@dataclasses.dataclass
class Loop:
    name: str                      # e.g. 'g'; checkpoints go to `directory`
    directory: str
    epochs: int
    steps_per_epoch: int
    images_per_step: int
    best_metric: Optional[str] = None
    writer: Optional[object] = None  # tensorboardX SummaryWriter (chief only)


def run(loop: Loop, state: TrainState, step_fn: Callable, batches: Callable[[jax.Array], Iterator],
        rng: jax.Array, epoch_end: Optional[EpochEnd] = None) -> TrainState:
    """Train `state` for `loop.epochs` epochs with `step_fn(state, batch, rng)`.

    `batches(epoch_key)` yields the global batches of one epoch. After each epoch: `epoch_end`
    (e.g. the mean S on the validation split), then an Orbax checkpoint.
    """
    mgr = checkpoint.manager(loop.directory, loop.best_metric)
    start = mgr.latest_step() or 0
    if start:
        state, _ = checkpoint.restore(mgr, start, state)
        print(f'[{loop.name}] resuming after epoch {start}/{loop.epochs} from {loop.directory}')
    for epoch in range(start + 1, loop.epochs + 1):
        epoch_key = jax.random.fold_in(rng, epoch)
        sums: dict[str, float] = {}
        bar = tqdm(total=loop.steps_per_epoch, desc=f'{loop.name} epoch {epoch}/{loop.epochs}',
                   disable=not parallel.is_chief(), leave=False, dynamic_ncols=True)
        t0, pending = time.perf_counter(), []
        for i, batch in enumerate(batches(jax.random.fold_in(epoch_key, 0))):
            state, metrics = step_fn(state, batch, jax.random.fold_in(epoch_key, i + 1))
            pending.append(metrics)
            if len(pending) >= 10 or i + 1 == loop.steps_per_epoch:
                # Reading metrics back synchronises; do it every few steps, not every step.
                for m in jax.device_get(pending):
                    for k, v in m.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                bar.update(len(pending))
                pending = []
                seen = max(1, bar.n)
                bar.set_postfix(loss=f'{sums["loss"] / seen:.4f}',
                                img_s=f'{seen * loop.images_per_step / (time.perf_counter() - t0):.0f}')
        bar.close()
        n_steps = max(1, bar.n)
        train_metrics = {f'train/{k}': v / n_steps for k, v in sums.items()}
        train_metrics['train/images_per_s'] = n_steps * loop.images_per_step / (time.perf_counter() - t0)
        extra, meta = epoch_end(epoch, state) if epoch_end else ({}, {})
        metrics = {**train_metrics, **extra}
        checkpoint.save(mgr, epoch, state, {'epoch': epoch, 'metrics': metrics, **meta},
                        metrics=metrics if loop.best_metric else None)
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
