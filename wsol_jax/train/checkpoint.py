"""Orbax checkpoints: one per epoch (the epoch is the step), state plus JSON metadata.

The train state is saved as a plain dict (params, batch_stats, opt_state, step). For `g` the
manager ranks epochs by the mean containment score (`best_fn` reads `mean_S`); without
`best_fn`, Orbax's `best_step()` would silently return the latest step.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import orbax.checkpoint as ocp

from wsol_jax.errors import WorkdirError
from wsol_jax.train.state import TrainState


def manager(directory: str, best_metric: Optional[str] = None, read_only: bool = False) -> ocp.CheckpointManager:
    # Reading is done with create=False rather than Orbax's read_only, which warns on every use.
    options = ocp.CheckpointManagerOptions(
        best_fn=(lambda m: m[best_metric]) if best_metric else None, best_mode='max',
        create=not read_only)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _state_dict(state: TrainState) -> dict:
    return {'params': state.params, 'batch_stats': state.batch_stats, 'opt_state': state.opt_state,
            'step': state.step}


def save(mgr: ocp.CheckpointManager, epoch: int, state: TrainState, meta: dict,
         metrics: Optional[dict] = None) -> None:
    mgr.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(_state_dict(state)),
                                            meta=ocp.args.JsonSave(meta)), metrics=metrics)


def restore(mgr: ocp.CheckpointManager, epoch: int, target: TrainState) -> tuple[TrainState, dict]:
    """Restore epoch `epoch` into the structure (and shardings) of `target`."""
    restored = mgr.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_state_dict(target)), meta=ocp.args.JsonRestore()))
    s = restored['state']
    state = target.replace(params=s['params'], batch_stats=s['batch_stats'], opt_state=s['opt_state'],
                           step=s['step'])
    return state, restored['meta']


def restore_variables(directory: str, target: TrainState, epoch: Optional[int] = None,
                      what: str = 'model') -> tuple[dict, dict]:
    """`({'params', 'batch_stats'}, meta)` of a finished stage's checkpoint (default: latest),
    with a clear error when it is missing."""
    mgr = manager(directory, read_only=True) if os.path.isdir(directory) else None
    steps = mgr.all_steps() if mgr else []
    if epoch is None and steps:
        epoch = max(steps)
    if epoch is None or epoch not in steps:
        raise WorkdirError(f'no checkpoint of {what}{"" if epoch is None else f" at epoch {epoch}"} '
                           f'in {directory}; run the stage that trains it first')
    state, meta = restore(mgr, epoch, target)
    return state.variables, meta


def all_meta(mgr: ocp.CheckpointManager) -> dict[int, Any]:
    """The JSON metadata of every saved epoch, `{epoch: meta}`."""
    return {e: mgr.restore(e, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
            for e in mgr.all_steps()}
