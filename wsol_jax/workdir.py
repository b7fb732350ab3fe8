"""The workdir: its layout (named here once), what each stage's artifacts depend on, atomic writes.

Layout of `<workdir>/`:
  f_classifier/        Orbax checkpoints of the classifier f (Method I's f; Top-1 cls and CAM in both)
  f_siamese/           Orbax checkpoints of the Siamese f (Method II)
  f_encoder/           f imported from its weight file and used as an encoder (f.train=False)
  g/                   Orbax checkpoints of g: the best-S epoch and the latest (or every epoch)
  g_history.json       metrics of every epoch of g (mean S, ...): what the selection reads
  f_*_history.json     metrics of every epoch of each f
  f_quality.json       f's accuracy on the validation split, measured after train_f
  fingerprints/        per stage, the config values its artifacts were made with
  strip/epoch_XXX.npy  maps of a few validation images per epoch (Fig. 4-style strip)
  config.json          the config of the last run; classes.json: the number and names of the classes
  selection.json, results.json, results.md, *.png, timings.json, tensorboard/, data_cache/
  scoremaps/           test-split maps in clovaai/wsolevaluation's layout (eval.save_maps), with
  wsolevaluation_metadata/, wsolevaluation_masks/   the ground truth its evaluation.py reads (wsolevaluation.py)
  export/              a portable localiser (--stage=export); predictions/: --stage=predict
  .lock                held (flock) by the command that uses the workdir: its pid, host and command line

A stage's fingerprint is the part of the config that shapes its artifacts. A rerun with the same
fingerprint resumes; with another one it stops and names the keys that differ, unless
`config.overwrite` asks to start that stage, and every stage after it, afresh.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import tempfile
import threading
from typing import Any, Callable, Iterator, Optional, Sequence


from wsol_jax import parallel
from wsol_jax.errors import WorkdirError

F_CLASSIFIER, F_SIAMESE, F_ENCODER, G = 'f_classifier', 'f_siamese', 'f_encoder', 'g'
G_HISTORY, F_QUALITY, FINGERPRINTS = 'g_history.json', 'f_quality.json', 'fingerprints'
STRIP, SELECTION, TIMINGS = 'strip', 'selection.json', 'timings.json'
CONFIG, CLASSES, SCOREMAPS, EXPORT, PREDICTIONS = 'config.json', 'classes.json', 'scoremaps', 'export', 'predictions'
WSOLEVAL_METADATA, WSOLEVAL_MASKS = 'wsolevaluation_metadata', 'wsolevaluation_masks'
REPORTS = ('results.json', 'results.md', 'selection.png', 'overlays.png', 'strip.png')
LOCK = '.lock'
# What a full disk, a read-only filesystem or missing permissions raise while writing.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)
TRAINED = (F_CLASSIFIER, F_SIAMESE, F_ENCODER, G)  # in the order they are trained


def f_networks(config) -> tuple[str, ...]:
    """The f networks a run trains (or imports), in order: the folders of f in its workdir. The
    classifier, where there is one, also gives Top-1 cls/loc and the CAM baseline. (Here, not in
    `wsol_jax.methods`, which imports the training steps: the localiser reads it too.)"""
    if not config.f.train:
        return (F_ENCODER,)
    if config.method == 'method2' and config.f.kind == 'classifier':
        return (F_CLASSIFIER, F_SIAMESE)
    return (F_CLASSIFIER,)


def has_classifier(config) -> bool:
    """Whether the run has a classifier f for Top-1 cls/loc and the CAM baseline."""
    return F_CLASSIFIER in f_networks(config)


def history_name(stage: str) -> str:
    """The per-epoch metrics file of a trained stage."""
    return G_HISTORY if stage == G else f'{stage}_history.json'


# The budget of a stage: a longer budget (or more patience, another scoring interval) continues a
# shorter run from its last checkpoint, so they are not part of that stage's fingerprint (but g
# depends on the f that f's budget kept).
_BUDGETS = ('max_epochs', 'patience', 'eval_every_steps')
BUDGET_KEYS = {'f': tuple(f'f.{k}' for k in _BUDGETS) + ('f.min_images',), 'g': tuple(f'g.{k}' for k in _BUDGETS)}

# Config keys that never change what a stage produced (where things go, how long to train: a
# longer run continues a shorter one, and g records the f it was trained with).
_IGNORED = {
    'data.cache_dir',
    'data.read_threads',
    'cpu_devices',
    'f.allow_weak',
    'f.min_accuracy_over_chance',
    'g.keep_all_checkpoints',
    'overwrite',
    'distributed',
}


def flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
    """`{'a': {'b': 1}}` -> `{'a.b': 1}`; sequences become lists (JSON)."""
    if hasattr(tree, 'to_dict'):
        tree = tree.to_dict()
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(flatten(v, f'{prefix}{k}.'))
        return out
    return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def fingerprint(config, stage: str) -> dict[str, Any]:
    """The config values the artifacts of `stage` (one of `TRAINED`) depend on, flat."""
    flat = {k: v for k, v in flatten(config).items() if k not in _IGNORED}
    common = {k: v for k, v in flat.items() if k in ('seed', 'dtype') or k.startswith('data.')}
    f_keys = {k: v for k, v in flat.items() if k.startswith('f.')}
    if stage == F_CLASSIFIER:
        keys = {
            **common,
            **{
                k: v
                for k, v in f_keys.items()
                if k not in BUDGET_KEYS['f'] + ('f.embed_dim', 'f.margin', 'f.siamese_from_classifier')
            },
        }
        if flat.get('f.blank_weight'):  # the blank image is what g's zero map makes: it depends on this
            keys['g.mask_space'] = flat['g.mask_space']
        return keys
    if stage == F_ENCODER:  # imported from its weight file, trained on nothing
        return {**common, **{k: v for k, v in f_keys.items() if k in ('f.arch', 'f.width', 'f.pretrained')}}
    if stage == F_SIAMESE:
        keys = {**common, **{k: v for k, v in f_keys.items() if k not in BUDGET_KEYS['f']}}
        if flat.get('f.siamese_from_classifier'):  # it starts from the classifier its budget kept
            keys.update({k: flat[k] for k in BUDGET_KEYS['f']})
        if flat.get('f.blank_weight'):
            keys['g.mask_space'] = flat['g.mask_space']
        return keys
    if stage == G:
        # g is only as good as the f it was trained with: every f key counts, epochs included;
        # and its per-epoch S depends on the box rule.
        # (eval.selection_se decides which epochs' checkpoints are kept)
        selection = {
            k: v
            for k, v in flat.items()
            if k in ('eval.box_rule', 'eval.threshold_ratio', 'eval.max_coverage', 'eval.selection_se')
        }
        g_keys = {k: v for k, v in flat.items() if k.startswith('g.') and k not in BUDGET_KEYS['g']}
        return {**common, **f_keys, **g_keys, **selection, 'method': flat['method']}
    raise ValueError(f'unknown stage {stage!r}')


def path(workdir: str, *parts: str) -> str:
    return os.path.join(workdir, *parts)


def _fingerprint_path(workdir: str, stage: str) -> str:
    return path(workdir, FINGERPRINTS, f'{stage}.json')


def has_checkpoints(directory: str) -> bool:
    """Whether an Orbax directory holds at least one finished step (a numbered folder)."""
    return os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))


# Keys added to the config after checkpoints may have been recorded, with the value that keeps
# the earlier behaviour: a fingerprint without them matches a config holding that value.
ADDED_KEYS = {
    'optimizer.warmup_epochs': 0.0,
    'optimizer.clip_norm': 0.0,
    'f.erase_prob': 0.0,
    'f.erase_fill': 'mean',
    'f.blank_weight': 0.0,
    'f.label_smoothing': 0.0,
    'f.min_images': 0,
    'f.scale_jitter': 0.0,
    'f.colour_jitter': 0.0,
    'data.flip': True,
    'g.initial_weight': 0.5,
    'g.start_agreement': 0.0,
    'g.ema_decay': 0.0,
    'data.cache_codec': 'raw',
    'f.siamese_from_classifier': False,
    # histories recorded before it have no mean_S_se: the rule is then the maximum, as it was
    'eval.selection_se': 1.0,
}


def _differences(old: dict, new: dict) -> list[str]:
    def same_as_before(k):
        return k not in old and any((k == s or k.endswith('.' + s)) and new[k] == v for s, v in ADDED_KEYS.items())

    keys = sorted(set(old) | set(new))
    return [
        f'{k}: {old.get(k, "(unset)")!r} -> {new.get(k, "(unset)")!r}'
        for k in keys
        if old.get(k) != new.get(k) and not same_as_before(k)
    ]


def check(workdir: str, config, stages: tuple[str, ...]) -> None:
    """Before anything runs: every stage in `stages` whose checkpoints exist must have been made
    with this config (same fingerprint). With `config.overwrite`, a stage that differs is
    deleted with every stage after it; otherwise `WorkdirError` names the differing keys."""
    for i, stage in enumerate(stages):
        if not has_checkpoints(path(workdir, stage)):
            continue
        record = _fingerprint_path(workdir, stage)
        if os.path.exists(record):
            with open(record) as fh:
                diff = _differences(json.load(fh), json.loads(json.dumps(fingerprint(config, stage), default=str)))
            problem = f'were made with other settings ({"; ".join(diff[:6])}{"; ..." if len(diff) > 6 else ""})'
        else:
            diff, problem = ['(no record)'], 'have no record of the settings they were made with'
        if not diff:
            continue
        if not config.overwrite:
            raise WorkdirError(
                f'the checkpoints of {stage} in {workdir} {problem}; use a new --workdir, or '
                f'--config.overwrite=True to train {stage} and the stages after it afresh'
            )
        if parallel.is_chief():
            remove_from(workdir, stage)
            print(f'[workdir] overwrite: removed {stage} and the stages after it ({problem})')
        parallel.barrier('workdir_overwrite')
        return


def remove_from(workdir: str, stage: str) -> None:
    """Delete `stage`'s artifacts and everything derived from them."""
    later = TRAINED[TRAINED.index(stage) :]
    doomed = [*later, *(f'{FINGERPRINTS}/{s}.json' for s in later), *map(history_name, later), SELECTION, *REPORTS]
    if G in later:
        doomed.append(STRIP)
    if stage in (F_CLASSIFIER, F_SIAMESE, F_ENCODER):
        doomed.append(F_QUALITY)
    for name in doomed:
        p = path(workdir, name)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)


def remove_derived(workdir: str) -> None:
    """Delete the selection and the reports (they describe an older set of epochs of g)."""
    for name in (SELECTION, *REPORTS):
        if os.path.exists(path(workdir, name)):
            os.remove(path(workdir, name))


def record(workdir: str, config, stage: str) -> None:
    """Write the fingerprint of `stage` before its first checkpoint."""
    write_json(_fingerprint_path(workdir, stage), fingerprint(config, stage))


def write_json(file: str, obj: Any) -> None:
    write_atomically(file, lambda f: json.dump(obj, f, indent=1, default=str), text=True)


def read_json(file: str, default: Any = None) -> Any:
    if not os.path.exists(file):
        return default
    with open(file) as fh:
        return json.load(fh)


def _write_temporary(file: str, write: Callable, text: bool) -> str:
    """`write(file object)` into a new temporary file beside `file` (readable like any file); its path."""
    os.makedirs(os.path.dirname(os.path.abspath(file)), exist_ok=True)
    suffix = os.path.splitext(file)[1]
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(file)), prefix='.tmp_', suffix=suffix)
    try:
        with os.fdopen(fd, 'w' if text else 'wb') as fh:
            write(fh)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600: results must be readable like any file
    except BaseException:
        os.remove(tmp)
        raise
    return tmp


def write_atomically(file: str, write: Callable, text: bool = False) -> None:
    """`write(file object)` into a temporary file beside `file`, then rename it over `file`: a
    kill never leaves a truncated result beside complete ones."""
    write_together([(file, write, text)])


def write_together(files: Sequence[tuple[str, Callable, bool]], remove: Sequence[str] = ()) -> None:
    """Files that describe one thing (a report: results.json, results.md and its figures) as one
    unit: each `(path, write(file object), text)` is rendered to a temporary name first (the slow
    part; an interrupt there leaves every old file), then all are renamed into place, and the
    files of `remove` deleted, in one short step during which Ctrl-C waits (all old or all new)."""
    done: list[tuple[str, str]] = []
    try:
        for file, write, text in files:
            done.append((_write_temporary(file, write, text), file))
        with interrupts_deferred():
            for tmp, file in done:
                os.replace(tmp, file)
            for file in remove:
                if os.path.exists(file):
                    os.remove(file)
    except BaseException:
        for tmp, _ in done:
            if os.path.exists(tmp):
                os.remove(tmp)
        raise


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """A SIGINT (Ctrl-C) received inside the block takes effect when the block ends. Only the main
    thread receives Python's signals; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(signal.SIGINT, received[0])  # Python's default handler: KeyboardInterrupt here
        elif received and previous == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGINT)


# How libraries written in C++ (TensorStore, ArrayRecord) report a failed write in their messages.
_ERRNO_TEXTS = {
    'No space left on device': errno.ENOSPC,
    'Disk quota exceeded': errno.EDQUOT,
    'Read-only file system': errno.EROFS,
    'Permission denied': errno.EACCES,
}


def write_errno(error: BaseException) -> Optional[int]:
    """The OS error number behind a failed write: an OSError's own, or the one that TensorStore
    (`[os_error_code='28']`) or ArrayRecord (`write() failed: No space left on device`) put into
    the message of their ValueError or RuntimeError; None when there is none."""
    if isinstance(getattr(error, 'errno', None), int):
        return error.errno
    text = str(error)
    found = re.search(r"os_error_code='?(\d+)", text)
    if found:
        return int(found.group(1))
    return next((code for words, code in _ERRNO_TEXTS.items() if words in text), None)


@contextlib.contextmanager
def writing(folder: str, what: str, setting: str) -> Iterator[None]:
    """A full disk, a read-only filesystem or a missing permission while writing under `folder`
    ends in one line that names it and the `setting` that chooses another folder:
    `WorkdirError('cannot write <what> <folder>: <reason>; free some space or set <setting> to
    another folder')`. Errors about files elsewhere (an unreadable input) pass unchanged."""
    try:
        yield
    except (OSError, RuntimeError, ValueError) as e:
        code = write_errno(e)
        if isinstance(e, OSError):
            file = os.path.abspath(os.fsdecode(e.filename)) if e.filename else None
            ours = file is None or inside(file, folder)
        else:  # a C++ library's message: it names the file it failed to write
            file, ours = None, os.path.abspath(folder) in str(e)
        if code not in WRITE_ERRNOS or not ours:
            raise
        where = f' ({file})' if file and file != os.path.abspath(folder) else ''
        fix = 'free some space' if code in (errno.ENOSPC, errno.EDQUOT) else 'make it writable'
        raise WorkdirError(
            f'cannot write {what} {folder}: {os.strerror(code)}{where}; {fix} or set {setting} to another folder'
        ) from None


def inside(file: str, folder: str) -> bool:
    """Whether the path `file` is `folder` or lies under it."""
    folder = os.path.abspath(folder)
    return os.path.commonpath([os.path.abspath(file), folder]) == folder
