"""The early-stopping rule of Section 3: which epoch of `g` to keep, from its per-epoch history.

`history` maps an epoch to the metrics recorded after it (`train_g` writes them): `mean_S` is the
mean containment score (Eq. 6) over the validation split, the only thing the selection reads;
`val/gt_known_loc` (where the validation split has boxes) is a diagnostic the selection never uses.

`select_epoch` and `selection_regret` are pure functions of that history; the stage that applies
them to a workdir is `wsol_jax.select`.
"""
from __future__ import annotations

import math
from typing import Mapping

from wsol_jax.errors import TrainingError

CRITERION = 'mean_S'


def select_epoch(history: Mapping[int, Mapping[str, float]], criterion: str = CRITERION) -> int:
    """The epoch with the highest mean S; ties go to the earliest epoch (the least
    over-segmented map, the paper's reason to stop early). Epochs whose score is not finite are
    never selected; if no epoch has a positive score every map was degenerate (one blob over the
    whole image, or empty) and there is nothing to select: `TrainingError`."""
    scores = {int(e): float(h[criterion]) for e, h in history.items()
              if criterion in h and math.isfinite(float(h[criterion]))}
    if not scores:
        raise TrainingError(f'no epoch of g has a finite {criterion}; the training diverged: lower '
                            'config.g.optimizer.learning_rate and start again (--config.overwrite=True)')
    best = max(scores.values())
    if best <= 0:
        raise TrainingError(
            f'every epoch of g ({len(scores)}) gave degenerate weight maps on the validation split (one blob '
            'over the whole image, or nothing): g did not learn to localise. Check that f classifies well '
            '(f_quality.json), lower config.g.reg_weight if the maps vanished, or train g longer')
    return min(e for e, s in scores.items() if s == best)


def selection_regret(history: Mapping[int, Mapping[str, float]], selected: int,
                     diagnostic: str = 'val/gt_known_loc') -> dict | None:
    """How much validation localisation the S-based choice gave up against the best epoch in
    hindsight (a diagnostic: it uses the validation boxes, which the selection never sees).
    None when the validation split has no boxes."""
    values = {int(e): float(h[diagnostic]) for e, h in history.items() if diagnostic in h}
    if not values or int(selected) not in values:
        return None
    best_epoch = min(e for e, v in values.items() if v == max(values.values()))
    return {'metric': diagnostic, 'selected_epoch': int(selected), 'selected': values[int(selected)],
            'best_epoch': best_epoch, 'best': values[best_epoch],
            'regret': values[best_epoch] - values[int(selected)]}

