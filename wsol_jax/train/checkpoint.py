"""Orbax checkpoints keyed by the global training step: state plus JSON metadata.

The train state is saved as a plain dict (params, batch_stats, opt_state, step). Which steps
stay on disk is decided by the training loop from the history of scored points (`wsol_jax.selection`),
not by Orbax's `best_fn`, so that the kept step is exactly the one the selection picks.
"""
from __future__ import annotations

import os
from typing import Optional

import orbax.checkpoint as ocp

from wsol_jax.errors import WorkdirError
from wsol_jax.train.state import TrainState


def manager(directory: str, read_only: bool = False) -> ocp.CheckpointManager:
    # Reading is done with create=False rather than Orbax's read_only, which warns on every use.
    options = ocp.CheckpointManagerOptions(create=not read_only)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _state_dict(state: TrainState) -> dict:
    return {'params': state.params, 'batch_stats': state.batch_stats, 'opt_state': state.opt_state,
            'step': state.step}


def save(mgr: ocp.CheckpointManager, step: int, state: TrainState, meta: dict) -> None:
    mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_state_dict(state)),
                                            meta=ocp.args.JsonSave(meta)))


def restore(mgr: ocp.CheckpointManager, step: int, target: TrainState) -> tuple[TrainState, dict]:
    """Restore step `step` into the structure (and shardings) of `target`."""
    restored = mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_state_dict(target)), meta=ocp.args.JsonRestore()))
    s = restored['state']
    state = target.replace(params=s['params'], batch_stats=s['batch_stats'], opt_state=s['opt_state'],
                           step=s['step'])
    return state, restored['meta']


def saved_steps(directory: str) -> list[int]:
    """The finalised steps in `directory`, read from the folder names: no CheckpointManager,
    which would synchronise all processes (a multi-host run must make the same Orbax calls on
    every host, and a folder that one host sees a moment before another must not change them)."""
    return sorted(ocp.utils.checkpoint_steps(directory)) if os.path.isdir(directory) else []


def _find(directory: str, step: Optional[int], what: str) -> tuple[ocp.CheckpointManager, int]:
    """The manager of `directory` and the step to restore (default: latest), or a clear error."""
    steps = saved_steps(directory)
    if step is None and steps:
        step = max(steps)
    if step is None or step not in steps:
        raise WorkdirError(f'no checkpoint of {what}{"" if step is None else f" at step {step}"} '
                           f'in {directory}; run the stage that trains it first')
    return manager(directory, read_only=True), step


def restore_variables(directory: str, target: TrainState, step: Optional[int] = None,
                      what: str = 'model') -> tuple[dict, dict]:
    """`({'params', 'batch_stats'}, meta)` of a finished stage's checkpoint (default: latest),
    with a clear error when it is missing."""
    mgr, step = _find(directory, step, what)
    state, meta = restore(mgr, step, target)
    return state.variables, meta


def restore_inference_variables(directory: str, abstract_variables: dict, step: Optional[int] = None,
                                what: str = 'model') -> tuple[dict, dict]:
    """Only `{'params', 'batch_stats'}` of a checkpoint (default: latest), as numpy arrays, into
    the structure of `abstract_variables` (e.g. `jax.eval_shape` of `model.init`): restoring for
    inference builds no optimiser and reads none of its state."""
    mgr, step = _find(directory, step, what)
    item = dict(abstract_variables)
    restored = mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                                     partial_restore=True),
        meta=ocp.args.JsonRestore()))
    return dict(restored['state']), restored['meta']


def latest_step(directory: str) -> Optional[int]:
    """The last complete step saved in `directory`, or None."""
    steps = saved_steps(directory)
    return steps[-1] if steps else None
