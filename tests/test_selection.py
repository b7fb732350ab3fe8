"""The early-stopping rule over a per-epoch history, and the regret diagnostic."""

import math

import pytest

from wsol_jax.errors import TrainingError
from wsol_jax.selection import select_step, selection_regret


def test_highest_mean_s_wins():
    history = {1: {'mean_S': 0.70}, 2: {'mean_S': 0.91}, 3: {'mean_S': 0.85}}
    assert select_step(history) == 2


def test_the_latest_epoch_within_one_standard_error_of_the_best_is_kept():
    # Method II, synthetic seed 0: a coarse epoch 1 and a refined epoch 3 that S cannot tell apart.
    history = {
        1: {'mean_S': 0.9933, 'mean_S_se': 0.0015},
        2: {'mean_S': 0.9853, 'mean_S_se': 0.0030},
        3: {'mean_S': 0.9923, 'mean_S_se': 0.0032},
    }
    assert select_step(history) == 3  # 0.9923 >= 0.9933 - 0.0015
    assert select_step(history, standard_errors=0) == 1  # Eq. 6 literally: the maximum
    assert select_step(history, standard_errors=0.5) == 1  # 0.9923 < 0.9933 - 0.00075
    # the tolerance is the best epoch's standard error, not the candidate's
    history[1]['mean_S_se'] = 0.0005
    assert select_step(history) == 1


def test_a_map_that_breaks_into_parts_is_not_kept_however_late():
    history = {
        1: {'mean_S': 0.98, 'mean_S_se': 0.002},
        2: {'mean_S': 0.99, 'mean_S_se': 0.002},
        3: {'mean_S': 0.94, 'mean_S_se': 0.007},
    }
    assert select_step(history) == 2


def test_without_standard_errors_the_maximum_wins_and_exact_ties_go_to_the_latest():
    history = {3: {'mean_S': 0.9}, 1: {'mean_S': 0.5}, 2: {'mean_S': 0.9}, 4: {'mean_S': 0.89}}
    assert select_step(history) == 3
    assert select_step({1: {'mean_S': 0.9, 'mean_S_se': math.nan}, 2: {'mean_S': 0.8}}) == 1


def test_non_finite_epochs_are_never_selected():
    history = {1: {'mean_S': math.nan}, 2: {'mean_S': 0.4}, 3: {'mean_S': math.inf}}
    assert select_step(history) == 2
    with pytest.raises(TrainingError, match='finite'):
        select_step({1: {'mean_S': math.nan}})


def test_all_degenerate_epochs_stop_with_a_reason():
    with pytest.raises(TrainingError, match='degenerate'):
        select_step({1: {'mean_S': 0.0}, 2: {'mean_S': 0.0}})


def test_regret_against_the_best_epoch_in_hindsight():
    history = {
        1: {'mean_S': 0.9, 'val/gt_known_loc': 0.80},
        2: {'mean_S': 0.8, 'val/gt_known_loc': 0.85},
        3: {'mean_S': 0.7, 'val/gt_known_loc': 0.85},
    }
    r = selection_regret(history, select_step(history))
    assert r['selected_step'] == 1 and r['best_step'] == 2
    assert r['regret'] == pytest.approx(0.05)
    assert selection_regret({1: {'mean_S': 0.9}}, 1) is None  # no validation boxes
