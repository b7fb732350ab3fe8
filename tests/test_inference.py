"""Inference with trained networks (wsol_jax/inference.py): per-image scores and flags of maps, CAMs."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from wsol_jax import boxes as boxes_lib, inference
from wsol_jax.models import Classifier
from wsol_jax.train.state import create_train_state, make_optimizer

CROP = 32
OPT = ml_collections.ConfigDict(
    dict(name='sgd', learning_rate=0.01, momentum=0.9, weight_decay=1e-4, decay_every=10, decay_factor=0.1)
)


def test_collapsed_maps_are_flagged():
    maps = np.zeros((3, 16, 16), np.float32)
    maps[0] = 0.02  # weights nothing
    maps[0, 4:8, 4:8] = 0.05
    maps[1] = 0.97  # weights everything
    maps[1, 0, 0] = 0.95
    maps[2, 4:10, 3:12] = 1.0  # an object
    hat = boxes_lib.thresholded_maps(maps)
    scores = inference.map_scores(maps, hat, boxes_lib.boxes_from_thresholded(hat), 0.95)
    np.testing.assert_array_equal(scores['collapsed'], [True, True, False])
    assert scores['S'][2] == pytest.approx(1.0)


def test_cam_maps_are_normalised_and_full_size():
    f = Classifier(3, width=0.125)
    f_state = create_train_state(f, jax.random.key(0), (1, CROP, CROP, 3), make_optimizer(OPT, 10))
    images = np.random.default_rng(0).integers(0, 256, (4, CROP, CROP, 3), dtype=np.uint8)
    cams = inference.compile_cam_maps(f, CROP)(f_state.variables, images, jnp.array([0, 1, 2, 0]))
    assert cams.shape == (4, CROP, CROP)
    assert float(cams.min()) >= 0.0 and float(cams.max()) <= 1.0 + 1e-6
