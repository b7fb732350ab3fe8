"""The start-up checks (wsol_jax/checks.py `check_run`): their one owner, called by the stages
(`run`) and by `fit_weight_map`, refuses what a run cannot use before anything trains."""

import numpy as np
import pytest

import wsol_jax
from helpers import tiny_synthetic
from wsol_jax import parallel
from wsol_jax.checks import check_run
from wsol_jax.data.dataset import Dataset, Split
from wsol_jax.errors import ConfigError, DataError


def _split(n: int, size: int = 32, labels=None, **annotations) -> Split:
    labels = np.arange(n) % 2 if labels is None else np.asarray(labels)
    return Split(np.zeros((n, size, size, 3), np.uint8), labels.astype(np.int32), **annotations)


def _boxes(n: int) -> np.ndarray:
    return np.tile(np.array([[[2.0, 2.0, 20.0, 20.0]]]), (n, 1, 1))


def test_a_test_split_whose_masks_give_no_box_stops_at_start_up():
    """Every evaluator scores boxes; masks that are all empty give none (the record cache keeps
    the masks and no boxes): the run stops before training, not in the evaluate stage."""
    config = tiny_synthetic('method1')
    masks = np.zeros((4, 32, 32), np.uint8)
    data = Dataset(_split(16, boxes=_boxes(16)), _split(4), _split(4, masks=masks), 2)
    with pytest.raises(DataError, match=r'the test split has no boxes: its masks are all empty'):
        check_run(config, data, parallel.make_mesh(), ('train_f', 'train_g', 'select', 'evaluate'))
    check_run(config, data, parallel.make_mesh(), ('train_f', 'train_g', 'select'))  # evaluates nothing: fine
    with_boxes = Dataset(data.train, data.val, _split(4, masks=masks, boxes=_boxes(4)), 2)
    check_run(config, with_boxes, parallel.make_mesh(), ('evaluate',))


def test_the_crop_is_checked_against_every_splits_images():
    config = tiny_synthetic('method1')  # crop 32
    data = Dataset(_split(16), _split(4, size=24), _split(4, boxes=_boxes(4)), 2)
    with pytest.raises(ConfigError, match=r'config.data.crop_size=32 exceeds the val images \(24 px\)'):
        check_run(config, data, parallel.make_mesh(), ('train_g',))


def test_fit_weight_map_stops_on_the_stage_checks_before_training(tmp_path):
    """fit_weight_map's data go through `check_run`: the same one-line errors as a run, before any
    compile or any file in the workdir."""
    f_apply = lambda x: x.mean(axis=(1, 2))  # features; never called: every case stops first
    config = tiny_synthetic('method1')
    config.f.kind = 'encoder'
    images = np.zeros((16, 32, 32, 3), np.uint8)
    cases = [
        (images, images[:4, :24, :24], ConfigError, r'config.data.crop_size=32 exceeds the val images \(24 px\)'),
        (images[:8], images[:4], ConfigError, r'config.g.batch_size=16 is larger than the training split \(8 images'),
        (images, images[:0], DataError, 'the validation split is empty'),
    ]
    two = tiny_synthetic('method2')
    two.f.kind = 'encoder'
    for train, val, error, message in cases:
        with pytest.raises(error, match=message):
            wsol_jax.fit_weight_map(f_apply, train, val, config, workdir=str(tmp_path / 'w'))
    with pytest.raises(DataError, match=r'Method II draws triplets .* needs at least two classes in the training'):
        wsol_jax.fit_weight_map(f_apply, (images, np.zeros(16)), images[:4], two, workdir=str(tmp_path / 'w'))
    assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize(
    'f, evaluators, left_out',
    [
        (dict(arch='vit_tiny_test'), ('cam',), r'cam \(f \(vit_tiny_test\) pools a class token'),
        (dict(kind='encoder', train=False, pretrained='f.safetensors'), ('cam',), r'cam \(f has no class head'),
    ],
)
def test_evaluators_that_make_no_row_with_maps_are_one_start_up_error(f, evaluators, left_out):
    """The overlay figure draws the rows' maps: an `eval.evaluators` whose rows are all left out for
    this f (CAM of a ViT or of an encoder) stops at start-up, naming the key."""
    config = tiny_synthetic('method1')
    config.f.update(f)
    config.eval.evaluators = evaluators
    data = Dataset(_split(16), _split(4), _split(4, boxes=_boxes(4)), 2)
    message = rf"config.eval.evaluators: \('cam',\) makes no row with maps for this f: left out {left_out}"
    with pytest.raises(ConfigError, match=message) as error:
        check_run(config, data, parallel.make_mesh(), ('evaluate',))
    assert '\n' not in str(error.value) and str(error.value).endswith('add weight_map_selected')
    check_run(config, data, parallel.make_mesh(), ('select',))  # evaluates nothing: fine
    config.eval.evaluators = ('cam', 'weight_map_last')
    check_run(config, data, parallel.make_mesh(), ('evaluate',))  # one row with maps: fine
    config.f.update(dict(arch='resnet18', kind='classifier', train=True))
    config.eval.evaluators = ('cam',)  # a ResNet classifier has CAM: its row draws maps
    check_run(config, data, parallel.make_mesh(), ('evaluate',))
