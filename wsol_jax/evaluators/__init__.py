"""Evaluators: each scores one kind of map on a split and yields named rows of metrics.

Modelled on big_vision's `evaluators/common.py`: the config names the evaluators
(`eval.evaluators`, the rows of the test table in order; `eval.save_maps` adds the
wsolevaluation one), `from_config` builds them from the registry below, and each one's
`run(bench)` yields `common.Row`s (`bench`: a `common.Bench`, what is evaluated, each part of it
computed once, when the first evaluator asks for it). Adding a metric or a variant is one new
evaluator module and one entry here.

  weight_map_selected, weight_map_last   g at a point (`weight_map.py`), the paper's crop protocol
  cam                                    the CAM baseline of f (`cam.py`)
  weight_map_selected_wsolevaluation     g's whole-image maps, saved and scored as wsolevaluation does (`scoremaps.py`)
  validation.py                          mean S (Eq. 6) on the validation split: what train_g scores for the selection

The registry is data (module names, titles): the report reads the titles without importing the
evaluators.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any


@dataclasses.dataclass(frozen=True)
class Entry:
    module: str  # wsol_jax.evaluators.<module>, whose `Evaluator(name, **options)` makes the rows
    title: str  # the row's name in results.md
    overlay: str = ''  # its column title in overlays.png ('' : not drawn)
    needs: str = ''  # a key of `methods.not_defined`: for an f without it the row is left out
    protocol: str = ''  # how its numbers were obtained, a line of results.md ('' : the common lines say it)
    options: tuple[tuple[str, Any], ...] = ()


SCOREMAPS = 'weight_map_selected_wsolevaluation'
EVALUATORS = {
    'weight_map_selected': Entry(
        'weight_map', 'weight map g, point selected by S', 'g (selected)', options=(('point', 'selected'),)
    ),
    'weight_map_last': Entry('weight_map', 'weight map g, last point', 'g (last)', options=(('point', 'last'),)),
    'cam': Entry(
        'cam',
        'CAM of f (baseline)',
        'CAM',
        needs='cam',
        protocol='- CAM: class activation maps of f for the true class, ReLU, bilinearly upsampled, min-max '
        'normalised; its boxes follow the same rule as g\'s.',
    ),
    SCOREMAPS: Entry(
        'scoremaps',
        'weight map g, point selected by S, wsolevaluation protocol (whole image at 224, saved scoremaps)',
        protocol='- wsolevaluation protocol (with eval.save_maps): g on the whole image (resize, no crop), maps '
        'resized to 224x224 and min-max normalised, exactly the arrays written to scoremaps/; ground truth scaled '
        'once from '
        'the original image\'s pixels as clovaai/wsolevaluation\'s evaluation.py does (boxes int(x * 224 / W) '
        'of the integer boxes, masks resized to 224 by nearest neighbours), the same files it reads in '
        'wsolevaluation_metadata/ and wsolevaluation_masks/. Only the threshold-free metrics are reported there.',
    ),
}
DEFAULT = ('weight_map_selected', 'weight_map_last', 'cam')  # the default of eval.evaluators


def names(config, not_defined: dict[str, str]) -> tuple[str, ...]:
    """The rows this run evaluates, in order: `eval.evaluators`, then the wsolevaluation one with
    `eval.save_maps`; those that this run's f does not define (`not_defined`:
    `methods.not_defined`) left out."""
    listed = tuple(config.eval.evaluators) + ((SCOREMAPS,) if config.eval.save_maps else ())
    return tuple(dict.fromkeys(n for n in listed if EVALUATORS[n].needs not in not_defined))


def from_config(config, not_defined: dict[str, str]) -> list:
    """The evaluators of `names(config, not_defined)`, built (their modules imported now)."""
    out = []
    for name in names(config, not_defined):
        entry = EVALUATORS[name]
        module = importlib.import_module(f'{__name__}.{entry.module}')
        out.append(module.Evaluator(name, **dict(entry.options)))
    return out


def title(name: str) -> str:
    """The row's name in results.md (the key itself for a row no evaluator here makes)."""
    return EVALUATORS[name].title if name in EVALUATORS else name
