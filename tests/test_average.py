"""g's moving average of its weights (`g.ema_decay`, `TrainState.average`): the update rule, the
compiled step that keeps it, the checkpoint that saves it and the inference path that reads it."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from wsol_jax import config as config_lib, parallel
from wsol_jax.errors import ConfigError
from wsol_jax.models import Classifier, WeightMapNet
from wsol_jax.train import checkpoint, steps
from wsol_jax.train.state import TrainState, abstract_train_state, create_train_state

CROP = 32
DECAY = 0.75
G_CFG = ml_collections.ConfigDict(
    dict(mask_space='normalized', reg_weight=1.0, inner_weight=1.0, outer_weight=1.0, margin=1.0, ema_decay=DECAY)
)


def _toy_state(w, m) -> TrainState:
    return TrainState.create(
        apply_fn=None, params={'w': jnp.asarray(w)}, batch_stats={'m': jnp.asarray(m)}, tx=optax.sgd(0.1)
    )


def test_the_average_moves_by_one_minus_decay_towards_the_weights():
    state = _toy_state([1.0, 2.0], [0.0]).with_average()
    assert state.variables is state.average  # what is evaluated is the average once there is one
    state = state.replace(params={'w': jnp.asarray([3.0, -2.0])}, batch_stats={'m': jnp.asarray([4.0])})
    state = state.update_average(0.9)
    # by hand: 0.9 * old + 0.1 * new
    np.testing.assert_allclose(state.average['params']['w'], [1.2, 1.6], rtol=1e-6)
    np.testing.assert_allclose(state.average['batch_stats']['m'], [0.4], rtol=1e-6)
    np.testing.assert_allclose(state.trained_variables['params']['w'], [3.0, -2.0])


def test_without_an_average_the_variables_are_the_trained_ones():
    state = _toy_state([1.0], [0.0])
    assert state.average is None
    np.testing.assert_array_equal(state.variables['params']['w'], [1.0])


def test_the_average_starts_as_a_copy_not_the_same_buffers():
    """The compiled step donates the state's buffers: an average that shared them would be read
    after they were freed."""
    state = _toy_state([1.0, 2.0], [0.0]).with_average()
    assert state.average['params']['w'] is not state.params['w']
    np.testing.assert_array_equal(state.average['params']['w'], state.params['w'])


@pytest.fixture(scope='module')
def g_setup():
    f = Classifier(3, width=0.125)
    g = WeightMapNet(width=0.125)
    tx = optax.sgd(0.05, momentum=0.9)
    f_state = create_train_state(f, jax.random.key(0), (1, CROP, CROP, 3), tx)
    g_state = create_train_state(g, jax.random.key(1), (1, CROP, CROP, 3), tx)
    step = steps.compile_step(
        functools.partial(steps.g_step, steps.frozen_apply(f), g, G_CFG, CROP, steps.method1_objective),
        parallel.make_mesh(),
        n_frozen=1,
        donate_state=False,
    )
    images = np.random.default_rng(0).integers(0, 256, (4, CROP, CROP, 3), dtype=np.uint8)
    return g, tx, g_state, f_state.variables, step, images


def test_the_g_step_updates_the_average_after_the_weights(g_setup):
    _, _, g_state, f_vars, step, images = g_setup
    state = g_state.with_average()
    before = jax.tree.map(np.asarray, state.average)
    new, _ = step(state, f_vars, {'image': images}, jax.random.key(3))
    trained = jax.tree.map(np.asarray, new.trained_variables)
    expected = jax.tree.map(lambda a, w: DECAY * a + (1 - DECAY) * w, before, trained)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7), new.average, expected)
    # the weights moved, so the average differs from both the start and the weights
    assert any(bool(np.any(a != b)) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(trained)))


def test_a_checkpoint_keeps_the_average_and_inference_reads_it(g_setup, tmp_path):
    g, tx, g_state, f_vars, step, images = g_setup
    state, _ = step(g_state.with_average(), f_vars, {'image': images}, jax.random.key(3))
    mgr = checkpoint.manager(str(tmp_path / 'g'))
    checkpoint.save(mgr, 1, state, {'step': 1})
    mgr.wait_until_finished()
    sharding = parallel.replicated_sharding(parallel.make_mesh())
    target = abstract_train_state(g, (1, CROP, CROP, 3), tx, sharding, average=True)
    restored, _ = checkpoint.restore(mgr, 1, target)
    for a, b in ((restored.average, state.average), (restored.params, state.params)):
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, a), jax.tree.map(np.asarray, b))
    shapes = jax.eval_shape(lambda: g.init(jax.random.key(0), jnp.zeros((1, CROP, CROP, 3)), train=False))
    abstract = {'params': shapes['params'], 'batch_stats': shapes['batch_stats']}
    inference, _ = checkpoint.restore_inference_variables(str(tmp_path / 'g'), abstract, 1, 'g')
    jax.tree.map(np.testing.assert_array_equal, inference, jax.tree.map(np.asarray, state.average))


def test_the_config_refuses_a_decay_of_one():
    c = config_lib.base_config('method1')
    c.g.ema_decay = 1.0
    with pytest.raises(ConfigError, match=r'^config.g.ema_decay: must be in \[0, 1\)'):
        config_lib.validate_training(c)
