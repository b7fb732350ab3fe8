"""The stages of a run, one table: what each does, reads and writes, and the module that runs it.

    train_f -> train_g -> select -> evaluate      (--stage=all, the default: these four, in order)
    export, predict                               (use a trained run)

Each stage is the function `run` of `wsol_jax/stages/<name>.py`: `run(ctx)` (a
`wsol_jax.context.Context`: the config, the workdir, the data and the device mesh) for the stages
that need the data, `run(config, workdir)` for those that use a trained run. `wsol_jax.run`
dispatches through `STAGES`, main.py builds its `--stage` flag from it, and the README's table of
stages is `markdown_table()` (a test holds it to that).

What a stage reads and writes are workdir names (`wsol_jax.workdir`); every stage that needs the
data also writes `config.json`, `classes.json` and `timings.json`. A stage's module is imported
only when the stage runs, so that main.py reads this table at start-up without importing the
training code, and export and predict import none of it through the table.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

from wsol_jax import workdir as workdir_lib

F_NETWORKS = (workdir_lib.F_CLASSIFIER, workdir_lib.F_SIAMESE, workdir_lib.F_ENCODER)
TRAINED_RUN = (
    workdir_lib.CONFIG,
    workdir_lib.CLASSES,
    workdir_lib.SELECTION,
    workdir_lib.G,
    workdir_lib.F_CLASSIFIER,
    workdir_lib.F_QUALITY,
)  # what a localiser is made of


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str  # --stage=<name>; its code is wsol_jax/stages/<name>.py
    does: str  # one line (Markdown), for the README's table and the --stage help
    reads: tuple[str, ...]  # workdir names it needs
    writes: tuple[str, ...]  # workdir names it writes
    needs_data: bool  # loads the data set and builds the device mesh; False: uses a trained run
    # its module's `report(ctx, output, timings)` runs after the stage's wall time is recorded
    # (the evaluate stage's report lists that time)
    reports: bool = False
    out_key: str = ''  # the config key that puts `writes` outside the workdir ('' : always inside)
    model_key: str = ''  # the config key that takes the trained run from elsewhere ('' : the workdir)

    def function(self) -> Callable:
        """`run` of the stage's module, imported now."""
        return importlib.import_module(f'{__name__}.{self.name}').run

    def report_function(self) -> Callable:
        """`report` of the stage's module (only where `reports`), imported now."""
        return importlib.import_module(f'{__name__}.{self.name}').report


STAGES = (
    Stage(
        'train_f',
        'the classifier `f` (cross-entropy); Method II also the Siamese `f` (triplet loss, Eq. 2); `f.train=False`: '
        'imports f from its file; each f\'s validation accuracy',
        reads=(),
        writes=(*F_NETWORKS, *map(workdir_lib.history_name, F_NETWORKS), workdir_lib.F_QUALITY),
        needs_data=True,
    ),
    Stage(
        'train_g',
        '`g` with `f` frozen, once f is above chance; every `g.eval_every_steps` steps (default: once an epoch) the '
        "mean S on the validation split (of a moving average of g's weights where `g.ema_decay` > 0, which the "
        'later stages read too)',
        reads=(*F_NETWORKS, workdir_lib.F_QUALITY),
        writes=(workdir_lib.G, workdir_lib.G_HISTORY, workdir_lib.STRIP),
        needs_data=True,
    ),
    Stage(
        'select',
        'the point with the highest mean S, the latest within one standard error of it (no box or mask used)',
        reads=(workdir_lib.G, workdir_lib.G_HISTORY),
        writes=(workdir_lib.SELECTION,),
        needs_data=True,
    ),
    Stage(
        'evaluate',
        'each evaluator of `eval.evaluators` on the test split (default: selected point, last point and CAM '
        'baseline; `eval.save_maps`: also the maps for wsolevaluation), then the report',
        reads=(workdir_lib.SELECTION, workdir_lib.G, workdir_lib.F_CLASSIFIER, workdir_lib.F_QUALITY),
        writes=(*workdir_lib.REPORTS, workdir_lib.SCOREMAPS, workdir_lib.WSOLEVAL_METADATA, workdir_lib.WSOLEVAL_MASKS),
        needs_data=True,
        reports=True,
    ),
    Stage(
        'export',
        'g at the selected point, the classifier f, class names, preprocessing, box rule (no optimiser)',
        reads=TRAINED_RUN,
        writes=(workdir_lib.EXPORT,),
        needs_data=False,
        out_key='export.dir',
    ),
    Stage(
        'predict',
        'a trained localiser on new images (`predict.images`: a folder, a glob or a .txt of paths)',
        reads=TRAINED_RUN,
        writes=(workdir_lib.PREDICTIONS,),
        needs_data=False,
        out_key='predict.out',
        model_key='predict.model',
    ),
)
BY_NAME = {s.name: s for s in STAGES}
NAMES = tuple(BY_NAME)
ALL = tuple(s for s in STAGES if s.needs_data)  # --stage=all


def get(name: str) -> Stage:
    if name not in BY_NAME:
        raise ValueError(f'unknown stage {name!r}; choose all or one of {NAMES}')
    return BY_NAME[name]


def flag_help() -> str:
    """The help of main.py's `--stage`."""
    plain = lambda text: text.replace('`', '')
    return (
        f'all (default): {", ".join(s.name for s in ALL)}, in order; or one stage: '
        + '; '.join(f'{s.name}: {plain(s.does)}' for s in STAGES)
        + '. '
        + ' and '.join(s.name for s in STAGES if not s.needs_data)
        + ' use a trained run.'
    )


def _files(names: tuple[str, ...], key: str) -> str:
    shown = ', '.join(f'`{n}`' if '.' in n else f'`{n}/`' for n in names) or '-'
    return shown + (f' (or `--config.{key}`)' if key else '')


def markdown_table() -> str:
    """The README's table of the stages."""
    rows = [
        f'| `{s.name}` | {s.does} | {_files(s.reads, s.model_key)} | {_files(s.writes, s.out_key)} |' for s in STAGES
    ]
    return '\n'.join(['| `--stage=` | does | reads | writes |', '|---|---|---|---|', *rows])
