"""Orbax checkpoints: the epoch is the step, state plus JSON metadata.

The train state is saved as a plain dict (params, batch_stats, opt_state, step). Which epochs
stay on disk is decided by the training loop from the per-epoch history (`wsol_jax.selection`),
not by Orbax's `best_fn`, so that the kept epoch is exactly the one the selection picks.
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


def save(mgr: ocp.CheckpointManager, epoch: int, state: TrainState, meta: dict) -> None:
    mgr.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(_state_dict(state)),
                                            meta=ocp.args.JsonSave(meta)))


def restore(mgr: ocp.CheckpointManager, epoch: int, target: TrainState) -> tuple[TrainState, dict]:
    """Restore epoch `epoch` into the structure (and shardings) of `target`."""
    restored = mgr.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_state_dict(target)), meta=ocp.args.JsonRestore()))
    s = restored['state']
    state = target.replace(params=s['params'], batch_stats=s['batch_stats'], opt_state=s['opt_state'],
                           step=s['step'])
    return state, restored['meta']


def saved_epochs(directory: str) -> list[int]:
    """The finalised epochs in `directory`, read from the folder names: no CheckpointManager,
    which would synchronise all processes (a multi-host run must make the same Orbax calls on
    every host, and a folder that one host sees a moment before another must not change them)."""
    return sorted(ocp.utils.checkpoint_steps(directory)) if os.path.isdir(directory) else []


def _find(directory: str, epoch: Optional[int], what: str) -> tuple[ocp.CheckpointManager, int]:
    """The manager of `directory` and the epoch to restore (default: latest), or a clear error."""
    steps = saved_epochs(directory)
    if epoch is None and steps:
        epoch = max(steps)
    if epoch is None or epoch not in steps:
        raise WorkdirError(f'no checkpoint of {what}{"" if epoch is None else f" at epoch {epoch}"} '
                           f'in {directory}; run the stage that trains it first')
    return manager(directory, read_only=True), epoch


def restore_variables(directory: str, target: TrainState, epoch: Optional[int] = None,
                      what: str = 'model') -> tuple[dict, dict]:
    """`({'params', 'batch_stats'}, meta)` of a finished stage's checkpoint (default: latest),
    with a clear error when it is missing."""
    mgr, epoch = _find(directory, epoch, what)
    state, meta = restore(mgr, epoch, target)
    return state.variables, meta


def restore_inference_variables(directory: str, abstract_variables: dict, epoch: Optional[int] = None,
                                what: str = 'model') -> tuple[dict, dict]:
    """Only `{'params', 'batch_stats'}` of a checkpoint (default: latest), as numpy arrays, into
    the structure of `abstract_variables` (e.g. `jax.eval_shape` of `model.init`): restoring for
    inference builds no optimiser and reads none of its state."""
    mgr, epoch = _find(directory, epoch, what)
    item = dict(abstract_variables)
    restored = mgr.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                                     partial_restore=True),
        meta=ocp.args.JsonRestore()))
    return dict(restored['state']), restored['meta']


def latest_epoch(directory: str) -> Optional[int]:
    """The last complete epoch saved in `directory`, or None."""
    steps = saved_epochs(directory)
    return steps[-1] if steps else None
