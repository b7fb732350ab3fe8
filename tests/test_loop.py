"""The training loop (wsol_jax/train/loop.py) with budgets that follow the data: scores within
epochs, the kept point of each rule, early stopping by patience, retention, exact resume.

The loop is driven by a step that needs no network (a running sum of the batches and of the
step's random numbers), so every property is checked in milliseconds and against hand-computed
sequences; the end-to-end tests (test_run.py) run the same loop with f and g."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from wsol_jax.selection import select_step
from wsol_jax.train import budgets, loop
from wsol_jax.train.state import TrainState

STEPS_PER_EPOCH = 5


def _state():
    return TrainState.create(apply_fn=None, params={'w': jnp.zeros(3)}, batch_stats={}, tx=optax.identity())


def _step(state, batch, rng):
    """Adds the batch and a random number of the step's key: a resumed run must replay both."""
    w = state.params['w'] + batch['x'] + jax.random.uniform(rng)
    return state.replace(params={'w': w}, step=state.step + 1), {'loss': jnp.sum(w)}


def _batches(key, skip=0):
    """One epoch's batches from the epoch's key (its order), from the `skip`-th on."""
    values = np.asarray(jax.random.uniform(key, (STEPS_PER_EPOCH, 3)))
    return (({'x': jnp.asarray(v)}) for v in values[skip:])


def _spec(tmp_path, kept, **kwargs):
    defaults = dict(max_epochs=4, steps_per_epoch=STEPS_PER_EPOCH, images_per_step=1)
    return loop.Loop(
        't', str(tmp_path / 'ckpt'), history_path=str(tmp_path / 'history.json'), kept=kept, **{**defaults, **kwargs}
    )


def _scores_from(values):
    """A score function that returns `values[k]` at its k-th call."""
    calls = []

    def score(step, state):
        calls.append(step)
        return dict(values[len(calls) - 1])

    return score, calls


def _on_disk(spec):
    from wsol_jax.train import checkpoint

    return checkpoint.saved_steps(spec.directory)


def test_f_keeps_its_most_accurate_point_and_stops_after_patience_scores(tmp_path):
    # once an epoch; best at epoch 2, then three scores without a more accurate f (a tie is no progress)
    accuracy = [0.3, 0.5, 0.4, 0.5, 0.45, 0.9]
    score, calls = _scores_from([{budgets.F_SCORE: a} for a in accuracy])
    spec = _spec(tmp_path, budgets.most_accurate, max_epochs=10, patience=3)
    state, history = loop.run(spec, _state(), _step, _batches, jax.random.key(0), score)
    assert calls == [5, 10, 15, 20, 25]  # stopped after epoch 5 of 10
    assert loop.kept_point(spec, history) == 10 and loop.finished(spec, history, 25) == 'patience'
    assert _on_disk(spec) == [10, 25]  # the kept and the latest checkpoint
    assert [history[s]['epoch'] for s in sorted(history)] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert int(state.step) == 25


def test_f_at_a_perfect_validation_score_stops_at_once(tmp_path):
    # a Siamese f at accuracy 1 spent its whole patience waiting for a better point that cannot exist
    score, calls = _scores_from([{budgets.F_SCORE: a} for a in [0.5, 1.0, 1.0, 1.0]])
    spec = budgets.f_loop(_f_config(patience=3), str(tmp_path), 'f_classifier', STEPS_PER_EPOCH)
    _, history = loop.run(spec, _state(), _step, _batches, jax.random.key(0), score)
    assert calls == [5, 10] and loop.finished(spec, history, 10) == 'perfect'
    assert loop.kept_point(spec, history) == 10


def _f_config(**f):
    import ml_collections

    defaults = dict(max_epochs=10, eval_every_steps=0, patience=0, min_images=0, batch_size=4)
    return ml_collections.ConfigDict({'f': dict(defaults, **f)})


def test_f_with_a_minimum_of_examples_is_not_stopped_by_patience_before_it(tmp_path):
    """f from scratch on a few thousand varied images may stay at chance for many epochs before it
    learns: `f.min_images` = 48 examples at batch 4 is 12 steps, so the patience of 1 that would
    stop at step 10 (epoch 2: no gain) waits for the score at step 15, and stops at step 20."""
    accuracy = [0.3, 0.3, 0.5, 0.5, 0.5]
    score, calls = _scores_from([{budgets.F_SCORE: a} for a in accuracy])
    spec = budgets.f_loop(_f_config(patience=1, min_images=48), str(tmp_path), 'f_classifier', STEPS_PER_EPOCH)
    assert spec.min_steps == 12
    _, history = loop.run(spec, _state(), _step, _batches, jax.random.key(0), score)
    assert calls == [5, 10, 15, 20] and loop.kept_point(spec, history) == 15
    assert loop.finished(spec, history, 20) == 'patience'
    assert loop.finished(spec, {5: history[5], 10: history[10]}, 10) is None  # before the minimum
    # the Siamese f that starts from the trained classifier learns nothing afresh: no minimum
    siamese = _f_config(patience=1, min_images=48, siamese_from_classifier=True)
    assert budgets.f_loop(siamese, str(tmp_path), 'f_siamese', STEPS_PER_EPOCH).min_steps == 0
    assert budgets.f_loop(siamese, str(tmp_path), 'f_classifier', STEPS_PER_EPOCH).min_steps == 12


def test_g_scores_within_epochs_and_stops_when_s_does_not_come_back(tmp_path):
    # S every 2 steps (epochs of 5 steps): points at steps 2, 4, 6, ...; the selection keeps the latest
    # point within one standard error of the best; three points after it, g stops.
    s = [0.2, 0.6, 0.9, 0.89, 0.7, 0.6, 0.5, 0.99]
    score, calls = _scores_from([{'mean_S': v, 'mean_S_se': 0.02} for v in s])
    spec = _spec(tmp_path, lambda h: select_step(h, standard_errors=1.0), score_every=2, patience=3)
    _, history = loop.run(spec, _state(), _step, _batches, jax.random.key(0), score)
    assert calls == [2, 4, 6, 8, 10, 12, 14]  # mid-epoch points; stopped before 0.99 was seen
    assert select_step(history) == 8  # 0.89 >= 0.9 - 0.02: the latest of the two
    assert _on_disk(spec) == [8, 14]
    assert [round(history[k]['epoch'], 1) for k in sorted(history)] == [0.4, 0.8, 1.2, 1.6, 2.0, 2.4, 2.8]


def test_g_does_not_stop_by_patience_from_a_point_whose_maps_do_not_localise(tmp_path):
    # A run stopped at 1.6 epochs, 6 scores after its best point, whose maps were 65 % whole-image:
    # the evaluation then refuses that point; patience must count from a point it accepts.
    config = ml_collections.ConfigDict(
        {
            'g': dict(max_epochs=4, eval_every_steps=2, patience=2, keep_all_checkpoints=False),
            'eval': dict(selection_se=0.0, max_bad_maps=0.5),
        }
    )
    points = [(0.29, 0.65), (0.03, 0.96), (0.05, 0.94), (0.6, 0.3), (0.9, 0.1), (0.85, 0.1), (0.8, 0.1), (0.7, 0.1)]
    score, calls = _scores_from([{'mean_S': s, 'mean_S_se': 0.0, 'val/degenerate': d} for s, d in points])
    spec = budgets.g_loop(config, str(tmp_path), STEPS_PER_EPOCH)
    _, history = loop.run(spec, _state(), _step, _batches, jax.random.key(0), score)
    assert calls == [2, 4, 6, 8, 10, 12, 14]  # not stopped at step 6 (kept: step 2, 65 % bad maps)
    assert loop.kept_point(spec, history) == 10 and loop.finished(spec, history, 14) == 'patience'


def test_without_patience_the_budget_is_max_epochs_and_the_last_step_is_scored(tmp_path):
    score, calls = _scores_from([{'mean_S': 0.5, 'mean_S_se': 0.0}] * 20)
    spec = _spec(tmp_path, lambda h: select_step(h), max_epochs=2, score_every=4)
    loop.run(spec, _state(), _step, _batches, jax.random.key(0), score)
    assert calls == [4, 8, 10]  # every 4 steps, and the budget's last step


def test_no_kept_point_yet_never_stops_early(tmp_path):
    # every map degenerate (S = 0): the selection has nothing to keep, so patience cannot count
    score, calls = _scores_from([{'mean_S': 0.0}] * 10)
    spec = _spec(tmp_path, lambda h: select_step(h), max_epochs=2, patience=1)
    _, history = loop.run(spec, _state(), _step, _batches, jax.random.key(0), score)
    assert calls == [5, 10] and loop.kept_point(spec, history) is None


class Killed(Exception):
    pass


def test_an_interrupted_run_resumes_mid_epoch_to_the_same_state_and_selection(tmp_path):
    values = [{'mean_S': v, 'mean_S_se': 0.01} for v in (0.3, 0.8, 0.85, 0.7, 0.6, 0.95, 0.5, 0.4, 0.3, 0.2)]
    kept = lambda h: select_step(h, standard_errors=1.0)
    whole_score, _ = _scores_from(values)
    whole = _spec(tmp_path / 'whole', kept, score_every=3, patience=4)
    state_a, history_a = loop.run(whole, _state(), _step, _batches, jax.random.key(1), whole_score)

    def dies_at(step_limit):
        def step(state, batch, rng):
            if int(state.step) == step_limit:
                raise Killed()  # a kill between checkpoints: steps after the last save are lost
            return _step(state, batch, rng)

        return step

    spec = _spec(tmp_path / 'resumed', kept, score_every=3, patience=4)
    score, calls = _scores_from(values)
    with pytest.raises(Killed):
        loop.run(spec, _state(), dies_at(7), _batches, jax.random.key(1), score)  # step 7: mid-epoch 2
    assert _on_disk(spec) == [6]  # step 3 was neither kept nor the latest
    resumed_score, _ = _scores_from(values[2:])
    state_b, history_b = loop.run(spec, _state(), _step, _batches, jax.random.key(1), resumed_score)
    np.testing.assert_array_equal(np.asarray(state_a.params['w']), np.asarray(state_b.params['w']))
    assert sorted(history_a) == sorted(history_b)
    assert {k: v['train/loss'] for k, v in history_a.items()} == {k: v['train/loss'] for k, v in history_b.items()}
    assert select_step(history_a) == select_step(history_b) and _on_disk(whole) == _on_disk(spec)
    # a finished stage run again trains nothing
    again, calls = _scores_from(values)
    loop.run(spec, _state(), dies_at(0), _batches, jax.random.key(1), again)
    assert calls == []


def test_the_history_of_an_older_version_is_refused(tmp_path):
    from wsol_jax import workdir
    from wsol_jax.errors import WorkdirError

    path = str(tmp_path / 'g_history.json')
    workdir.write_json(path, {'1': {'mean_S': 0.9}})  # keyed by epoch
    with pytest.raises(WorkdirError, match='older wsol-jax .*--config.overwrite=True'):
        loop.read_history(path, 1)


def test_the_finally_selected_point_is_never_deleted_during_training():
    # train.loop keeps only the latest and the currently selected point; with a tolerance the
    # selection can move back and forth, yet the final choice must still have its checkpoint.
    from wsol_jax.train.loop import Loop, kept_point

    rng = np.random.default_rng(0)
    spec = Loop('g', '/unused', 8, 1, 1, '/unused', select_step)
    for _ in range(300):
        history, on_disk = {}, set()
        for step in range(1, 9):
            history[step] = {
                'mean_S': float(rng.choice([rng.uniform(0.9, 1.0), round(rng.uniform(0.95, 1.0), 2)])),
                'mean_S_se': float(rng.uniform(0, 0.02)),
            }
            on_disk = (on_disk | {step}) & {step, kept_point(spec, history)}
        assert select_step(history) in on_disk
