"""`wsol_jax.fit_weight_map`: g for any f from research code (a Flax module defined here), with the
training loop, budget and selection of the train_g stage; the localiser it returns predicts,
exports and loads like the stages' one."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import wsol_jax
from helpers import tiny_synthetic
from wsol_jax.data import load_dataset
from wsol_jax.errors import ConfigError
from wsol_jax.fit import as_split


class TinyEncoder(nn.Module):
    """The kind of f a researcher brings: any function of an image batch."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2))(x))
        x = nn.relu(nn.Conv(16, (3, 3), strides=(2, 2))(x))
        return jnp.mean(x, axis=(1, 2))


@pytest.fixture(scope='module')
def fitted(tmp_path_factory):
    """g fitted for an encoder f on images alone: neither train nor val has labels (Eq. 1 with the
    cosine distance of f's features needs none)."""
    config = tiny_synthetic('method1', g_epochs=2)
    data = load_dataset(config)
    encoder = TinyEncoder()
    params = encoder.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    config.f.kind = 'encoder'  # f_apply returns features: Eq. 1 with the cosine distance
    workdir = str(tmp_path_factory.mktemp('fit'))
    localizer = wsol_jax.fit_weight_map(
        lambda x: encoder.apply(params, x), np.asarray(data.train.images), np.asarray(data.val.images), config, workdir
    )
    return localizer, data, workdir


def test_fit_trains_g_with_the_stage_loop_and_keeps_the_selected_point(fitted):
    import json

    localizer, data, workdir = fitted
    history = json.load(open(f'{workdir}/g_history.json'))['points']
    assert sorted(history, key=int) == ['3', '6']  # 48 images, batch 16: S once an epoch, 2 epochs
    assert {'train/cosine', 'train/reg', 'mean_S'} <= set(history['3'])
    assert localizer.spec['source']['selected_step'] in (3, 6) and not localizer.has_classes
    assert localizer.spec['class_names'] == ['class_0']  # no labels: one class, which nothing reads


def test_the_fitted_localizer_predicts_exports_and_loads(fitted, tmp_path):
    localizer, data, _ = fitted
    images = list(np.asarray(data.test.images[:3]))
    out = localizer(images)
    assert len(out.maps) == 3 and out.boxes.shape == (3, 4) and (out.classes == -1).all()
    assert np.isnan(out.probabilities).all() and ((0 <= out.scores) & (out.scores <= 1)).all()
    loaded = wsol_jax.load_localizer(wsol_jax.export_localizer(localizer, str(tmp_path / 'export')))
    again = loaded(images)
    np.testing.assert_array_equal(again.boxes, out.boxes)
    np.testing.assert_allclose(np.stack(again.maps), np.stack(out.maps), atol=1e-6)


def test_inputs_that_cannot_be_images_are_one_clear_error():
    with pytest.raises(ConfigError, match=r'train images must be square \(N, S, S, 3\) uint8, got \(4, 32, 16, 3\)'):
        as_split(np.zeros((4, 32, 16, 3), np.uint8), 'train')
    split = as_split((np.zeros((4, 32, 32, 3), np.uint8), [0, 1, 0, 1]), 'val')
    assert split.labels.tolist() == [0, 1, 0, 1] and split.boxes is None
    split = as_split({'image': np.zeros((2, 32, 32, 3), np.uint8), 'label': [3, 1]}, 'train')
    assert split.labels.tolist() == [3, 1] and split.labels.dtype == np.int32
    assert as_split(np.zeros((2, 32, 32, 3), np.uint8), 'train').labels.tolist() == [0, 0]  # images alone
