"""Stage evaluate (wsol_jax/stages/evaluate.py): the report is written, then a selected point whose maps do
not localise stops the run."""

import json
import os

import pytest

from helpers import copy_run, tiny_synthetic
from wsol_jax import run as run_lib
from wsol_jax.errors import TrainingError


def test_a_run_whose_kept_maps_are_mostly_degenerate_stops_after_its_report(method1_run, tmp_path):
    """The kept epoch's maps on the validation split are marked 70 % whole-image and 10 %
    collapsed: evaluate writes the report (with its warning) and then stops with one line."""
    workdir, _ = method1_run
    copy = copy_run(workdir, tmp_path / 'w')
    path = os.path.join(copy, 'selection.json')
    selection = json.load(open(path))
    chosen = selection['history'][str(selection['selected_step'])]
    chosen['val/degenerate'], chosen['val/collapsed'] = 0.7, 0.1
    json.dump(selection, open(path, 'w'))
    os.remove(os.path.join(copy, 'results.md'))
    cfg = tiny_synthetic('method1')
    cfg.eval.max_bad_maps = 0.5
    with pytest.raises(TrainingError, match=r'g does not localise: .* 80% of the validation maps .*max_bad_maps=0.5'):
        run_lib.run(cfg, copy, 'evaluate')
    assert 'Warning' in open(os.path.join(copy, 'results.md')).read()
    cfg.eval.max_bad_maps = 0.8  # at the limit: accepted
    run_lib.run(cfg, copy, 'evaluate')
