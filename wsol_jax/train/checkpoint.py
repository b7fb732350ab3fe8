"""Orbax checkpoints keyed by the global training step: state plus JSON metadata.

The train state is saved as a plain dict (params, batch_stats, opt_state, step, and g's moving
average of its variables where it keeps one). Which steps
stay on disk is decided by the training loop from the history of scored points (`wsol_jax.selection`),
not by Orbax's `best_fn`, so that the kept step is exactly the one the selection picks.

A checkpoint proves that it is intact: the metadata holds the sha256 of every saved array
(`array_digests`), and every restore checks them and that every float is finite. Orbax stores
no checksum of its own (flipped bits in a data file restore as other numbers, or NaN), so
without this a damaged checkpoint would give wrong boxes without a word. A damaged, truncated
or unreadable checkpoint ends in one `WorkdirError` that names it and says what to do.
Checkpoints written before the digests existed are checked for finite values only.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import sys
from typing import TYPE_CHECKING, Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from wsol_jax import workdir as workdir_lib
from wsol_jax.errors import WorkdirError

if TYPE_CHECKING:  # annotations only: the localiser reads checkpoints without importing the optimisers
    from wsol_jax.train.state import TrainState

DIGESTS = 'sha256'  # key of the digests in a checkpoint's JSON metadata: {array name: hex digest}
AVERAGE = 'average'  # the moving average of the variables (TrainState.average), where one is kept


def manager(directory: str, read_only: bool = False) -> ocp.CheckpointManager:
    # Reading is done with create=False rather than Orbax's read_only, which warns on every use.
    options = ocp.CheckpointManagerOptions(create=not read_only)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _state_dict(state: TrainState) -> dict:
    tree = {'params': state.params, 'batch_stats': state.batch_stats, 'opt_state': state.opt_state, 'step': state.step}
    return tree if state.average is None else {**tree, AVERAGE: state.average}


def _key_name(key) -> str:
    for attr in ('key', 'idx', 'name'):  # DictKey / FlattenedIndexKey, SequenceKey, GetAttrKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _named_leaves(tree) -> dict[str, Any]:
    """`{'params.encoder.conv1.kernel': leaf, ...}`: Orbax's own names of the arrays of `tree`."""
    return {'.'.join(_key_name(k) for k in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _digest(array: np.ndarray) -> str:
    # Integers (the step counter) are hashed as int64: a Python int saved and an int32 restored agree.
    array = np.ascontiguousarray(array.astype(np.int64) if np.issubdtype(array.dtype, np.integer) else array)
    h = hashlib.sha256(f'{array.dtype.str}{array.shape}'.encode())
    h.update(array.view(np.uint8).reshape(-1) if array.size else b'')
    return h.hexdigest()


def _host(leaf) -> np.ndarray:
    """A (replicated) device array's value on the host; one device's copy, not cached on the array."""
    if isinstance(leaf, jax.Array) and leaf.is_fully_replicated:
        return np.asarray(leaf.addressable_data(0))
    return np.asarray(leaf)


def array_digests(tree) -> dict[str, str]:
    """sha256 (dtype, shape and bytes) of every array of `tree`, by name, computed on the host
    (`tree` may hold replicated device arrays)."""
    return {name: _digest(_host(leaf)) for name, leaf in _named_leaves(tree).items()}


def check_intact(tree, digests: Optional[dict], where: str, advice: str) -> None:
    """Every array of `tree` has the digest recorded for it in `digests` (None: a checkpoint from
    before digests were written; only the finite check then) and holds finite numbers only;
    otherwise one `WorkdirError` naming `where` and the first arrays that differ."""
    leaves = {n: _host(leaf) for n, leaf in _named_leaves(tree).items()}
    if digests is not None:
        changed = [n for n, leaf in leaves.items() if digests.get(n) != _digest(leaf)]
        if changed:
            raise WorkdirError(
                f'{where} is damaged: {some(changed)} no longer match the sha256 recorded when it was saved; {advice}'
            )
    bad = [n for n, leaf in leaves.items() if jnp.issubdtype(leaf.dtype, jnp.inexact) and not np.isfinite(leaf).all()]
    if bad:
        raise WorkdirError(f'{where} is damaged: {some(bad)} hold NaN or inf; {advice}')


def some(names: list[str], shown: int = 2) -> str:
    """`'3 array(s) (a, b and 1 more)'`: how many, and the first few by name."""
    more = f' and {len(names) - shown} more' if len(names) > shown else ''
    return f'{len(names)} array(s) ({", ".join(names[:shown])}{more})'


def save(mgr: ocp.CheckpointManager, step: int, state: TrainState, meta: dict) -> None:
    """Start writing `state` and `meta` as step `step`: Orbax writes in a background thread, and
    the next save or `mgr.wait_until_finished()` waits for it (a failed write raises there). The
    arrays are copied to host memory first, because the compiled train step donates the state's
    buffers: a write still reading them could store the next step's values (on a CPU, Orbax's
    host transfer can alias them)."""
    tree = jax.tree.map(lambda leaf: np.array(_host(leaf)), _state_dict(state))
    meta = {**meta, DIGESTS: array_digests(tree)}
    mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)))


def restore(
    mgr: ocp.CheckpointManager, step: int, target: TrainState, what: Optional[str] = None
) -> tuple[TrainState, dict]:
    """Restore step `step` into the structure (and shardings) of `target`, checked intact
    (`what`: the network, for messages; default: the folder's name)."""
    directory = os.fspath(mgr.directory)
    tree = _state_dict(target)
    args = ocp.args.Composite(state=ocp.args.StandardRestore(tree), meta=ocp.args.JsonRestore())
    restored = _restore_checked(
        directory, step, what or os.path.basename(directory), tree, lambda: mgr.restore(step, args=args)
    )
    s = restored['state']
    state = target.replace(
        params=s['params'],
        batch_stats=s['batch_stats'],
        opt_state=s['opt_state'],
        step=s['step'],
        average=s.get(AVERAGE),
    )
    return state, restored['meta']


def _restore_checked(directory: str, step: int, what: str, target, read) -> dict:
    """`read()` (an Orbax restore of `{'state', 'meta'}`), with every way it can fail on a damaged
    checkpoint as one line, then the digests and the finite check."""
    where = f'the checkpoint of {what} {os.path.join(directory, str(step))}'
    advice = retrain_advice(directory, step)
    try:
        restored = read()
    except Exception as e:  # Orbax and TensorStore raise ValueError, OSError, JSON and Unicode errors, ...
        reason = why_unreadable(os.path.join(directory, str(step)), 'state', target, e)
        raise WorkdirError(f'{where} cannot be read ({reason}); {advice}') from None
    check_intact(restored['state'], (restored['meta'] or {}).get(DIGESTS), where, advice)
    return restored


def retrain_advice(directory: str, step: int) -> str:
    """What to do about a damaged step of a stage folder of the workdir (`<workdir>/g`, ...)."""
    stage, workdir = os.path.basename(directory), os.path.dirname(directory)
    steps = saved_steps(directory)
    earlier = [s for s in steps if s < step]
    if stage == workdir_lib.G and earlier and step == max(steps):
        return (
            f'delete {os.path.join(directory, str(step))} and train again (--stage=all: g resumes after its '
            f'previous kept step, {max(earlier)})'
        )
    if stage in workdir_lib.TRAINED:
        later = [
            s
            for s in workdir_lib.TRAINED[workdir_lib.TRAINED.index(stage) + 1 :]
            if os.path.isdir(os.path.join(workdir, s))
        ]
        folders = ' and '.join(os.path.join(workdir, s) for s in (stage, *later))
        trained_with = f' ({", ".join(later)} {"was" if len(later) == 1 else "were"} trained with it)' if later else ''
        return f'delete {folders} and train again (--stage=all) to train {stage} afresh{trained_with}'
    return 'restore it from a copy or train it again'


# The JSON files of an Orbax checkpoint, relative to a step folder (`<step>/`) or an item folder.
_JSON_FILES = (
    '_CHECKPOINT_METADATA',
    'meta/metadata',
    'state/_METADATA',
    'state/_sharding',
    'state/array_metadatas/*',
    '_METADATA',
    '_sharding',
    'array_metadatas/*',
)


def why_unreadable(folder: str, item: str, target, error: Exception) -> str:
    """A short reason why Orbax could not restore `folder`: a JSON file that does not parse, the
    tensors that do not fit `target` (the tree restored from `folder/item`), or the tensor
    TensorStore could not read and why."""
    for pattern in _JSON_FILES:
        for file in sorted(glob.glob(os.path.join(folder, pattern))):
            try:
                with open(file, 'rb') as fh:
                    json.loads(fh.read().decode('utf-8'))
            except (ValueError, OSError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                return f'{os.path.relpath(file, folder)} is not valid JSON'
    differ = structure_differences(os.path.join(folder, item), target)
    if differ:
        return f'its arrays do not fit the network: {some(differ)}'
    chain = [error]  # Orbax may wrap TensorStore's error, which names the array, in its own
    while len(chain) < 8 and (chain[-1].__cause__ or chain[-1].__context__) not in (None, *chain):
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    texts = [' '.join(str(e).split()) for e in chain]
    text = next((t for t in texts if re.search(r'Error (?:reading|writing) "', t)), texts[0])
    tensor = re.search(r'Error (?:reading|writing) "([^"/]+)', text)
    files = re.findall(r'[Ll]ocal file "([^"]+)"', text)  # the database folder, then the file where named
    # what TensorStore says after the file's name, without its trailing [key=value] annotations
    detail = re.sub(r' \[\w+(\[\d+\])?=.*$', '', text.rsplit('": ', 1)[-1])[:160]
    if tensor:
        location = os.path.relpath(files[-1], folder) if files else item
        return f'array {tensor.group(1)} in {os.path.basename(folder) if location in (".", "") else location}: {detail}'
    return f'{type(error).__name__}: {text[:200]}'


def saved_shapes(item_folder: str) -> dict[str, tuple[int, ...]]:
    """`{array name: shape}` of the checkpoint item in `item_folder`, read from its metadata
    alone; {} when the metadata cannot be read (Orbax reads a damaged tree's metadata as empty)."""
    try:
        with ocp.StandardCheckpointer() as ckpt:
            metadata = ckpt.metadata(item_folder)
        return {
            n: tuple(m.shape)
            for n, m in _named_leaves(getattr(metadata, 'item_metadata', metadata)).items()
            if hasattr(m, 'shape')
        }
    except Exception:
        return {}


def structure_differences(item_folder: str, target) -> list[str]:
    """The arrays of `target` (a tree of arrays or ShapeDtypeStructs) that the checkpoint item in
    `item_folder` lacks or holds with another shape, as `'name: saved (a, b), expected (c, d)'`;
    [] when they fit or the item's metadata cannot be read."""
    saved = saved_shapes(item_folder)
    if not saved:  # the metadata is damaged or empty: the caller reports the read error
        return []
    out = []
    for name, leaf in _named_leaves(target).items():
        shape = tuple(np.shape(leaf))
        if name not in saved:
            out.append(f'{name}: not saved, expected {shape}')
        elif saved[name] != shape:
            out.append(f'{name}: saved {saved[name]}, expected {shape}')
    return out


def saved_steps(directory: str) -> list[int]:
    """The finalised steps in `directory`, read from the folder names: no CheckpointManager,
    which would synchronise all processes (a multi-host run must make the same Orbax calls on
    every host, and a folder that one host sees a moment before another must not change them)."""
    return sorted(ocp.utils.checkpoint_steps(directory)) if os.path.isdir(directory) else []


def _find(directory: str, step: Optional[int], what: str) -> tuple[str, int]:
    """The absolute `directory` and the step to restore (default: latest), or a clear error."""
    directory = os.path.abspath(directory)
    steps = saved_steps(directory)
    if step is None and steps:
        step = max(steps)
    if step is None or step not in steps:
        raise WorkdirError(
            f'no checkpoint of {what}{"" if step is None else f" at step {step}"} '
            f'in {directory}; run the stage that trains it first'
        )
    return directory, step


def restore_variables(
    directory: str, target: TrainState, step: Optional[int] = None, what: str = 'model'
) -> tuple[dict, dict]:
    """`({'params', 'batch_stats'}, meta)` of a finished stage's checkpoint (default: latest),
    with a clear error when it is missing or damaged."""
    directory, step = _find(directory, step, what)
    state, meta = restore(manager(directory, read_only=True), step, target, what)
    return state.variables, meta


def restore_inference_variables(
    directory: str, abstract_variables: dict, step: Optional[int] = None, what: str = 'model'
) -> tuple[dict, dict]:
    """Only the variables that `TrainState.variables` evaluates (`{'params', 'batch_stats'}`, or
    their moving average where the checkpoint holds one) of a checkpoint (default: latest), as
    numpy arrays, into the structure of `abstract_variables` (e.g. `jax.eval_shape` of
    `model.init`): restoring for inference builds no optimiser and reads none of its state.
    Checked intact like `restore`."""
    directory, step = _find(directory, step, what)
    averaged = any(n.startswith(AVERAGE + '.') for n in saved_shapes(os.path.join(directory, str(step), 'state')))
    item = {AVERAGE: dict(abstract_variables)} if averaged else dict(abstract_variables)

    def read():
        return manager(directory, read_only=True).restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
                ),
                meta=ocp.args.JsonRestore(),
            ),
        )

    restored = _restore_checked(directory, step, what, item, read)
    state = restored['state'][AVERAGE] if averaged else restored['state']
    return dict(state), restored['meta']


def latest_step(directory: str) -> Optional[int]:
    """The last complete step saved in `directory`, or None."""
    steps = saved_steps(directory)
    return steps[-1] if steps else None


class _OrbaxRecords(logging.Filter):
    """Drops Orbax's log records below CRITICAL (absl logs them under the 'absl' logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL or f'{os.sep}orbax{os.sep}' not in record.pathname


def _closed_loop_filter(previous):
    def hook(unraisable):
        # TensorStore finishing a read or write after Orbax gave up on the operation calls into
        # Orbax's closed event loop; the failure itself is reported by the operation.
        if not (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == 'Event loop is closed'):
            previous(unraisable)

    hook.quiet_orbax = True
    return hook


def quiet_orbax() -> None:
    """For the command line: Orbax's own logging and tracebacks off the console. A failed save or
    restore is reported as one line by this module and the training loop; without this, a full
    disk printed some 300 lines of Orbax's background threads above that line."""
    absl_logger = logging.getLogger('absl')
    if not any(isinstance(f, _OrbaxRecords) for f in absl_logger.filters):
        absl_logger.addFilter(_OrbaxRecords())
    logging.getLogger('orbax').setLevel(logging.CRITICAL)
    logging.getLogger('asyncio').setLevel(logging.CRITICAL)  # "Task exception was never retrieved" of Orbax's tasks
    if not getattr(sys.unraisablehook, 'quiet_orbax', False):
        sys.unraisablehook = _closed_loop_filter(sys.unraisablehook)
