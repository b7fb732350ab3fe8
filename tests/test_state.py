"""The train state and the optimiser (wsol_jax/train/state.py): warm-up, clipping, the names it accepts."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wsol_jax import config as config_lib
from wsol_jax.errors import ConfigError
from wsol_jax.train.state import OPTIMIZERS, SCHEDULES, learning_rate_schedule, make_optimizer


def test_warmup_starts_at_zero_and_clipping_bounds_the_update():
    cfg = config_lib.optimizer(0.1, 0.0, momentum=0.0, warmup_epochs=1.0, clip_norm=1.0)
    tx = make_optimizer(cfg, steps_per_epoch=4)
    params = {'w': jnp.zeros(3)}
    state = tx.init(params)
    grads = {'w': jnp.array([30.0, 40.0, 0.0])}  # norm 50, clipped to 1
    sizes = []
    for _ in range(6):
        updates, state = tx.update(grads, state, params)
        sizes.append(float(optax.global_norm(updates)))
    # lr 0, 0.025, 0.05, 0.075, then 0.1: update = lr * clipped gradient (norm 1)
    np.testing.assert_allclose(sizes, [0.0, 0.025, 0.05, 0.075, 0.1, 0.1], atol=1e-6)


def test_the_names_it_accepts_are_the_ones_the_config_checks():
    """The optimiser's and the schedule's names are defined here once: the config refuses any
    other with the key named, and the library refuses it where it uses it."""
    c = config_lib.base_config('method1')
    assert c.g.optimizer.name in OPTIMIZERS and c.g.optimizer.schedule in SCHEDULES
    c.g.optimizer.schedule = 'linear'
    with pytest.raises(ConfigError, match=r"^config.g.optimizer.schedule: must be one of \('step', 'cosine'\)"):
        config_lib.validate_training(c)
    with pytest.raises(ValueError, match=r"optimizer.schedule must be one of \('step', 'cosine'\), got 'linear'"):
        learning_rate_schedule(c.g.optimizer, 10, 1)
    c.g.optimizer.schedule, c.g.optimizer.name = 'step', 'lion'
    with pytest.raises(ConfigError, match=r'^config.g.optimizer.name: must be one of'):
        config_lib.validate_training(c)
    with pytest.raises(ValueError, match=r"optimizer.name must be one of \('sgd', 'adam', 'adamw'\), got 'lion'"):
        make_optimizer(c.g.optimizer, 10)
