"""The TFDS source: builders read through `load_dataset` (with `tfds.testing.mock_data`, no files),
and the TFDS box convention (ymin, xmin, ymax, xmax in [0, 1]) converted by hand."""

import numpy as np
import pytest

from helpers import load_config
from wsol_jax.data import load_dataset

tfds = pytest.importorskip('tensorflow_datasets')


def test_example_boxes_and_masks_hand_checked():
    from wsol_jax import wsolevaluation
    from wsol_jax.data.dataset import cache_boxes
    from wsol_jax.data.tfds_source import example_to_sample

    image = np.zeros((240, 320, 3), np.uint8)
    mask = np.zeros((240, 320, 1), np.uint8)
    mask[48:144, 32:192] = 255
    # TFDS bbox of [x0, y0, x1, y1] = [32, 48, 192, 144] in a 320 x 240 image:
    bbox = np.array([48 / 240, 32 / 320, 144 / 240, 192 / 320], np.float32)
    resized, boxes, m, size = example_to_sample(
        {'image': image, 'bbox': bbox, 'segmentation_mask': mask, 'label': 3}, 256
    )
    assert resized.shape == (256, 256, 3) and size == (320, 240)
    # Kept in the original pixels (float32 noise of the normalised box included) ...
    np.testing.assert_allclose(boxes, [[32, 48, 192, 144]], atol=1e-4)
    # ... and scaled once by the crop protocol: x * 0.8, y * 256 / 240, rounded.
    np.testing.assert_array_equal(cache_boxes(boxes[None], np.array([size]), 256)[0], [[26, 51, 154, 154]])
    # wsolevaluation's localization.txt lists the integers, and their resize_bbox truncates at 224.
    np.testing.assert_array_equal(wsolevaluation.listed_boxes(boxes), [[32, 48, 192, 144]])
    assert m.shape == (240, 320) and m.dtype == np.uint8 and m.max() == 1 and m[60, 40] == 1 and m[10, 10] == 0


@pytest.mark.parametrize('name, has_masks', [('caltech_birds2011', True), ('cars196', False)])
def test_tfds_builders_through_load_dataset(tmp_path, name, has_masks):
    c = load_config('cub', 'method1')
    c.data.update(
        dict(source='tfds', tfds_name=name, root=str(tmp_path), num_val=2, num_classes=0, image_size=64, crop_size=64)
    )
    with tfds.testing.mock_data(num_examples=6):
        data = load_dataset(c)
    assert (len(data.train), len(data.val), len(data.test)) == (4, 2, 6)
    assert data.train.images.shape[1:] == (64, 64, 3) and data.train.images.dtype == np.uint8
    assert data.test.boxes.shape == (6, 1, 4)
    assert (data.test.masks is not None) == has_masks
    assert data.num_classes > data.train.labels.max()


def test_unprepared_tfds_dataset_is_a_clear_error(tmp_path):
    from wsol_jax.errors import DataError

    c = load_config('cub', 'method1')
    c.data.update(dict(source='tfds', tfds_name='caltech_birds2011', root=str(tmp_path)))
    with pytest.raises(DataError, match='tfds build caltech_birds2011'):
        load_dataset(c)
