"""The early-stopping rule over a per-epoch history, and the regret diagnostic."""
import math

import pytest

from wsol_jax.errors import TrainingError
from wsol_jax.selection import select_epoch, selection_regret


def test_highest_mean_s_wins():
    history = {1: {'mean_S': 0.70}, 2: {'mean_S': 0.91}, 3: {'mean_S': 0.85}}
    assert select_epoch(history) == 2


def test_ties_go_to_the_earliest_epoch():
    history = {3: {'mean_S': 0.9}, 1: {'mean_S': 0.5}, 2: {'mean_S': 0.9}, 4: {'mean_S': 0.9}}
    assert select_epoch(history) == 2


def test_non_finite_epochs_are_never_selected():
    history = {1: {'mean_S': math.nan}, 2: {'mean_S': 0.4}, 3: {'mean_S': math.inf}}
    assert select_epoch(history) == 2
    with pytest.raises(TrainingError, match='finite'):
        select_epoch({1: {'mean_S': math.nan}})


def test_all_degenerate_epochs_stop_with_a_reason():
    with pytest.raises(TrainingError, match='degenerate'):
        select_epoch({1: {'mean_S': 0.0}, 2: {'mean_S': 0.0}})


def test_regret_against_the_best_epoch_in_hindsight():
    history = {1: {'mean_S': 0.9, 'val/gt_known_loc': 0.80}, 2: {'mean_S': 0.8, 'val/gt_known_loc': 0.85},
               3: {'mean_S': 0.7, 'val/gt_known_loc': 0.85}}
    r = selection_regret(history, select_epoch(history))
    assert r['selected_epoch'] == 1 and r['best_epoch'] == 2
    assert r['regret'] == pytest.approx(0.05)
    assert selection_regret({1: {'mean_S': 0.9}}, 1) is None   # no validation boxes
