"""How long each network trains and which of its scored points it keeps: the `loop.Loop` of
every stage, from the config.

Budgets follow the data: a stage scores its state every `eval_every_steps` steps (0: once an
epoch) and, with `patience`, stops once that many scores have passed since the point it keeps,
at the latest after `max_epochs`.
  * f keeps its most accurate point on the validation split (the earliest of equals: a later
    point must be better to count as progress), and stops at once at accuracy 1 (nothing later
    can be kept);
  * g keeps the point that the selection of Section 3 chooses (`selection.select_step`: mean S,
    one-standard-error rule), so "no progress" means that mean S has not come back within the
    selection's tolerance of its best for `patience` scores.
"""

from __future__ import annotations

from typing import Optional

from wsol_jax import workdir as workdir_lib
from wsol_jax.selection import bad_map_share, select_step
from wsol_jax.train.loop import History, Loop

F_SCORE = 'val/accuracy'


def lr_hint(config, net: str) -> str:
    """What to try when the loss of `net` ('f' or 'g') is not finite: the loop's `hint`."""
    lr = config[net].optimizer.learning_rate
    return (
        f'Lower config.{net}.optimizer.learning_rate (now {lr}, e.g. to {lr / 10:g}) and run again with '
        f'--config.overwrite=True' + (' (or use dtype=float32)' if config.dtype != 'float32' else '')
    )


def most_accurate(history: History) -> Optional[int]:
    """The step of the highest validation accuracy (the earliest of equal ones), None if none."""
    scored = {s: h[F_SCORE] for s, h in history.items() if F_SCORE in h}
    if not scored:
        return None
    best = max(scored.values())
    return min(s for s, v in scored.items() if v == best)


def f_loop(
    config, workdir: str, network: str, steps_per_epoch: int, images_per_step: int = 0, writer=None, hint: str = ''
) -> Loop:
    """The loop of the f network `network` (a workdir stage: f_classifier or f_siamese)."""
    f = config.f
    from_classifier = network == workdir_lib.F_SIAMESE and f.get('siamese_from_classifier', False)
    return Loop(
        network,
        workdir_lib.path(workdir, network),
        f.max_epochs,
        steps_per_epoch,
        images_per_step,
        workdir_lib.path(workdir, workdir_lib.history_name(network)),
        most_accurate,
        score_every=f.eval_every_steps,
        patience=f.patience,
        # examples drawn: steps x batch; a Siamese f that starts from the classifier learns nothing afresh
        min_steps=0 if from_classifier else -(-f.min_images // f.batch_size),
        hint=hint,
        writer=writer,
        ceiling=(F_SCORE, 1.0),
    )


def g_loop(config, workdir: str, steps_per_epoch: int, images_per_step: int = 0, writer=None, hint: str = '') -> Loop:
    """The loop of g; its kept point is the selection's."""
    g, se = config.g, config.eval.selection_se
    return Loop(
        'g',
        workdir_lib.path(workdir, workdir_lib.G),
        g.max_epochs,
        steps_per_epoch,
        images_per_step,
        workdir_lib.path(workdir, workdir_lib.G_HISTORY),
        lambda h: select_step(h, standard_errors=se),
        score_every=g.eval_every_steps,
        patience=g.patience,
        keep_all=g.keep_all_checkpoints,
        hint=hint,
        # patience counts only from a point whose maps localise (the share the evaluation accepts)
        settled=lambda point: bad_map_share(point) <= config.eval.max_bad_maps,
        writer=writer,
    )
