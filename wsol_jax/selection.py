"""The early-stopping rule of Section 3: which point of `g`'s training to keep, from its history.

`history` maps a step to the metrics scored there (`train_g` scores every `g.eval_every_steps`
steps, by default once an epoch; the paper scores epochs): `mean_S` is the
mean containment score (Eq. 6) over the validation split and `mean_S_se` its standard error, the
only things the selection reads;
`val/gt_known_loc` (where the validation split has boxes) is a diagnostic the selection never uses.

`select_step` and `selection_regret` are pure functions of that history; the stage that applies
them to a workdir is `wsol_jax.stages.select`, which writes `selection.json`; `load_selection`
reads it back for evaluate, export, predict and the localiser (here, beside the rule, so that the
inference path imports no training code).
"""

from __future__ import annotations

import math
from typing import Mapping

from wsol_jax import workdir as workdir_lib
from wsol_jax.errors import TrainingError, WorkdirError
from wsol_jax.train import checkpoint

CRITERION = 'mean_S'
STANDARD_ERROR = 'mean_S_se'  # the standard error of mean_S over the validation images


def select_step(
    history: Mapping[int, Mapping[str, float]], criterion: str = CRITERION, standard_errors: float = 1.0
) -> int:
    """The latest point whose mean S is within `standard_errors` standard errors of the highest
    (the one-standard-error rule of model selection); `standard_errors=0`: the point of the
    maximal mean S, Eq. 6 literally (exact ties: the latest). Points are steps (epochs in the
    paper, which scores once an epoch).

    Why the latest of the near-ties: Section 3 observes that g "becomes increasingly
    well-localized as training progresses" (a coarse mask, then a refined one, then a partial one)
    and stops before the partial phase, which S detects because the map breaks into several
    contours and the box no longer contains its weight. S does not tell a coarse single blob from a
    refined one: both keep their weight in their box. Differences in mean S below its standard
    error over the validation images are noise, and among epochs that S cannot tell apart, the
    latest is the most refined (measured on the synthetic benchmark, Method II seed 0: S 0.9933 /
    0.9853 / 0.9923 over three epochs, standard error 0.0015; validation GT-known 0.91 / 0.95 / 0.97).
    The standard error of the best epoch (`mean_S_se` in its history entry; 0 where a history
    has none) sets the tolerance.

    Points whose score is not finite are never selected; if no point has a positive score every
    map was degenerate (one blob over the whole image, or empty) and there is nothing to select:
    `TrainingError`."""
    scores = {
        int(e): float(h[criterion]) for e, h in history.items() if criterion in h and math.isfinite(float(h[criterion]))
    }
    if not scores:
        raise TrainingError(
            f'no scored point of g has a finite {criterion}; the training diverged: lower '
            'config.g.optimizer.learning_rate and start again (--config.overwrite=True)'
        )
    best = max(scores.values())
    if best <= 0:
        raise TrainingError(
            f'every scored point of g ({len(scores)}) gave degenerate weight maps on the validation split (one blob '
            'over the whole image, or nothing): g did not learn to localise. Check that f classifies well '
            '(f_quality.json), lower config.g.reg_weight if the maps vanished, or train g longer'
        )
    best_step = min(e for e, s in scores.items() if s == best)
    se = float(history[best_step].get(STANDARD_ERROR, 0.0)) if standard_errors > 0 else 0.0
    tolerance = standard_errors * se if math.isfinite(se) else 0.0
    return max(e for e, s in scores.items() if s >= best - tolerance)


def bad_map_share(point: Mapping[str, float]) -> float:
    """The share of a scored point's validation maps that do not localise: degenerate (one blob
    over nearly the whole image, or empty) plus collapsed (all weights below 0.1 or above 0.9)."""
    return float(point.get('val/degenerate', 0.0)) + float(point.get('val/collapsed', 0.0))


def selection_regret(
    history: Mapping[int, Mapping[str, float]], selected: int, diagnostic: str = 'val/gt_known_loc'
) -> dict | None:
    """How much validation localisation the S-based choice gave up against the best point in
    hindsight (a diagnostic: it uses the validation boxes, which the selection never sees).
    None when the validation split has no boxes."""
    values = {int(e): float(h[diagnostic]) for e, h in history.items() if diagnostic in h}
    if not values or int(selected) not in values:
        return None
    best_step = min(e for e, v in values.items() if v == max(values.values()))
    return {
        'metric': diagnostic,
        'selected_step': int(selected),
        'selected': values[int(selected)],
        'best_step': best_step,
        'best': values[best_step],
        'regret': values[best_step] - values[int(selected)],
    }


def load_selection(workdir: str) -> dict:
    """`selection.json` of `workdir`, refused when g has trained further since it was written."""
    path = workdir_lib.path(workdir, workdir_lib.SELECTION)
    selection = workdir_lib.read_json(path)
    if (
        selection is None
        or 'selected_step' not in selection
        or selection['last_step'] != checkpoint.latest_step(workdir_lib.path(workdir, workdir_lib.G))
    ):
        raise WorkdirError(f'{path} is missing or older than the last checkpoint of g; run --stage=select first')
    return selection
