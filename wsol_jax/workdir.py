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

A stage's fingerprint is the part of the config that shapes its artifacts. A rerun with the same
fingerprint resumes; with another one it stops and names the keys that differ, unless
`config.overwrite` asks to start that stage, and every stage after it, afresh.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from wsol_jax import parallel
from wsol_jax.errors import WorkdirError

F_CLASSIFIER, F_SIAMESE, F_ENCODER, G = 'f_classifier', 'f_siamese', 'f_encoder', 'g'
G_HISTORY, F_QUALITY, FINGERPRINTS = 'g_history.json', 'f_quality.json', 'fingerprints'
STRIP, SELECTION, TIMINGS = 'strip', 'selection.json', 'timings.json'
CONFIG, CLASSES, SCOREMAPS, EXPORT, PREDICTIONS = 'config.json', 'classes.json', 'scoremaps', 'export', 'predictions'
WSOLEVAL_METADATA, WSOLEVAL_MASKS = 'wsolevaluation_metadata', 'wsolevaluation_masks'
REPORTS = ('results.json', 'results.md', 'selection.png', 'overlays.png', 'strip.png')
TRAINED = (F_CLASSIFIER, F_SIAMESE, F_ENCODER, G)   # in the order they are trained


def history_name(stage: str) -> str:
    """The per-epoch metrics file of a trained stage."""
    return G_HISTORY if stage == G else f'{stage}_history.json'

# The budget of a stage: a longer budget (or more patience, another scoring interval) continues a
# shorter run from its last checkpoint, so they are not part of that stage's fingerprint (but g
# depends on the f that f's budget kept).
BUDGET_KEYS = {net: tuple(f'{net}.{k}' for k in ('max_epochs', 'patience', 'eval_every_steps')) for net in 'fg'}

# Config keys that never change what a stage produced (where things go, how long to train: a
# longer run continues a shorter one, and g records the f it was trained with).
_IGNORED = {'data.cache_dir', 'data.read_threads', 'cpu_devices', 'f.allow_weak', 'f.min_accuracy_over_chance', 'g.keep_all_checkpoints',
            'overwrite', 'distributed'}


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
        keys = {**common, **{k: v for k, v in f_keys.items()
                             if k not in BUDGET_KEYS['f'] + ('f.embed_dim', 'f.margin', 'f.siamese_from_classifier')}}
        if flat.get('f.blank_weight'):   # the blank image is what g's zero map makes: it depends on this
            keys['g.mask_space'] = flat['g.mask_space']
        return keys
    if stage == F_ENCODER:   # imported from its weight file, trained on nothing
        return {**common, **{k: v for k, v in f_keys.items() if k in ('f.arch', 'f.width', 'f.pretrained')}}
    if stage == F_SIAMESE:
        keys = {**common, **{k: v for k, v in f_keys.items() if k not in BUDGET_KEYS['f']}}
        if flat.get('f.siamese_from_classifier'):   # it starts from the classifier its budget kept
            keys.update({k: flat[k] for k in BUDGET_KEYS['f']})
        if flat.get('f.blank_weight'):
            keys['g.mask_space'] = flat['g.mask_space']
        return keys
    if stage == G:
        # g is only as good as the f it was trained with: every f key counts, epochs included;
        # and its per-epoch S depends on the box rule.
        # (eval.selection_se decides which epochs' checkpoints are kept)
        selection = {k: v for k, v in flat.items()
                     if k in ('eval.box_rule', 'eval.threshold_ratio', 'eval.max_coverage', 'eval.selection_se')}
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
ADDED_KEYS = {'optimizer.warmup_epochs': 0.0, 'optimizer.clip_norm': 0.0, 'f.erase_prob': 0.0,
              'f.blank_weight': 0.0, 'g.initial_weight': 0.5, 'data.cache_codec': 'raw',
              'f.siamese_from_classifier': False,
              # histories recorded before it have no mean_S_se: the rule is then the maximum, as it was
              'eval.selection_se': 1.0}


def _differences(old: dict, new: dict) -> list[str]:
    def same_as_before(k):
        return k not in old and any((k == s or k.endswith('.' + s)) and new[k] == v for s, v in ADDED_KEYS.items())

    keys = sorted(set(old) | set(new))
    return [f'{k}: {old.get(k, "(unset)")!r} -> {new.get(k, "(unset)")!r}' for k in keys
            if old.get(k) != new.get(k) and not same_as_before(k)]


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
            raise WorkdirError(f'the checkpoints of {stage} in {workdir} {problem}; use a new --workdir, or '
                               f'--config.overwrite=True to train {stage} and the stages after it afresh')
        if parallel.is_chief():
            remove_from(workdir, stage)
            print(f'[workdir] overwrite: removed {stage} and the stages after it ({problem})')
        parallel.barrier('workdir_overwrite')
        return


def remove_from(workdir: str, stage: str) -> None:
    """Delete `stage`'s artifacts and everything derived from them."""
    later = TRAINED[TRAINED.index(stage):]
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


def write_atomically(file: str, write, text: bool = False) -> None:
    """`write(file object)` into a temporary file beside `file`, then rename it over `file`: a
    kill never leaves a truncated result beside complete ones."""
    os.makedirs(os.path.dirname(os.path.abspath(file)), exist_ok=True)
    suffix = os.path.splitext(file)[1]
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(file)), prefix='.tmp_', suffix=suffix)
    try:
        with os.fdopen(fd, 'w' if text else 'wb') as fh:
            write(fh)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600: results must be readable like any file
        os.replace(tmp, file)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
