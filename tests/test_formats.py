"""Every on-disk format, through the loader a real run uses (`load_dataset`), on fixtures written
in that format: labels, boxes (hand-checked after the 256/224 transform), masks, splits, errors."""
import os

import numpy as np
import pytest

import fixtures
from helpers import load_config
from wsol_jax.data import load_dataset
from wsol_jax.data.dataset import center_crop_boxes
from wsol_jax.errors import ConfigError, DataError


def _config(name, root, **data):
    c = load_config(name, 'method1')
    c.data.root = str(root)
    c.data.update(data)
    return c


def test_cub_layout_and_hand_checked_box(tmp_path):
    meta = fixtures.write_cub(tmp_path / 'CUB_200_2011')
    data = load_dataset(_config('cub', tmp_path / 'CUB_200_2011', num_val=2, num_classes=0),
                        cache_dir=str(tmp_path / 'cache'))
    assert data.num_classes == 4
    assert len(data.train) + len(data.val) == 12 and len(data.test) == 12 and len(data.val) == 2
    # Image 1 is 320x240 with box x=32, y=48, w=160, h=96 -> [32, 48, 192, 144];
    # resized to 256: x * 0.8, y * 256/240 -> [25.6, 51.2, 153.6, 153.6] -> [26, 51, 154, 154];
    # centre crop 224 (offset 16): [10, 35, 138, 138].
    where = data.train if any(n.endswith(meta[1][0]) for n in data.train.names) else data.val
    i = [k for k, n in enumerate(where.names) if n.endswith(meta[1][0])][0]
    np.testing.assert_array_equal(where.boxes[i, 0], [26, 51, 154, 154])
    np.testing.assert_array_equal(center_crop_boxes(where.boxes[i:i + 1], 256, 224)[0, 0], [10, 35, 138, 138])
    assert where.labels[i] == 0
    # Labels and masks of the test split agree with the files.
    for k, name in enumerate(data.test.names):
        rel = os.path.relpath(name, tmp_path / 'CUB_200_2011' / 'images')
        (image_id,) = [j for j, m in meta.items() if m[0] == rel]
        assert data.test.labels[k] == meta[image_id][1] and meta[image_id][3] == 0
        mask = data.test.masks[k]
        x0, y0, x1, y1 = data.test.boxes[k, 0]
        assert mask[y0 + 2:y1 - 2, x0 + 2:x1 - 2].all() and mask.sum() < 0.95 * 256 * 256


def test_decoded_cache_is_reused(tmp_path):
    fixtures.write_cub(tmp_path / 'cub')
    cfg = _config('cub', tmp_path / 'cub', num_val=2, num_classes=0)
    a = load_dataset(cfg, cache_dir=str(tmp_path / 'cache'))
    assert len(os.listdir(tmp_path / 'cache')) == 3
    os.remove(tmp_path / 'cub' / 'images' / a.test.names[0].split('images/')[1])  # cached: not read again
    b = load_dataset(cfg, cache_dir=str(tmp_path / 'cache'))
    np.testing.assert_array_equal(a.test.images, b.test.images)


def test_cub_errors_name_the_file(tmp_path):
    root = tmp_path / 'cub'
    fixtures.write_cub(root)
    cfg = _config('cub', root, num_val=2, num_classes=0)
    victim = sorted((root / 'images').rglob('*.jpg'))[-1]
    victim.write_bytes(b'not a jpeg')
    with pytest.raises(DataError, match=f'cannot decode image .*{victim.name}.*images.txt:'):
        load_dataset(cfg)
    cfg.data.on_bad_sample = 'skip'
    data = load_dataset(cfg)
    assert len(data.train) + len(data.val) + len(data.test) == 23
    os.remove(root / 'bounding_boxes.txt')
    with pytest.raises(DataError, match='bounding_boxes.txt not found; config.data.root must point'):
        load_dataset(cfg)


def test_missing_root_and_bad_labels(tmp_path):
    with pytest.raises(DataError, match='is not a directory'):
        load_dataset(_config('cub', tmp_path / 'nowhere'))
    root = tmp_path / 'cub'
    fixtures.write_cub(root)
    with pytest.raises(DataError, match=r'label 2 \(0-based\) of .*Bird_2_0000.jpg .*is outside \[0, 2\)'):
        load_dataset(_config('cub', root, num_val=2, num_classes=2))
    with pytest.raises(ConfigError, match='num_val'):
        load_dataset(_config('cub', root, num_val=100, num_classes=0))


def test_stanford_cars_devkit(tmp_path):
    meta = fixtures.write_cars(tmp_path / 'cars')
    data = load_dataset(_config('cars', tmp_path / 'cars', num_val=1, num_classes=0))
    assert data.num_classes == 3 and len(data.test) == 6
    for k, name in enumerate(data.test.names):
        label, (x0, y0, x1, y1) = meta[('test', os.path.basename(name))]
        assert data.test.labels[k] == label
        expected = np.round(np.array([x0, y0, x1, y1]) * [0.8, 256 / 240, 0.8, 256 / 240])
        np.testing.assert_array_equal(data.test.boxes[k, 0], np.clip(expected, 0, 255))


def test_oxford_flowers_masks_and_splits(tmp_path):
    labels, boxes = fixtures.write_flowers(tmp_path / 'flowers')
    data = load_dataset(_config('flowers', tmp_path / 'flowers'))
    assert (len(data.train), len(data.val), len(data.test)) == (4, 4, 4)
    for k, name in enumerate(data.test.names):
        i = int(name[-9:-4])
        assert data.test.labels[k] == labels[i - 1]
        x0, y0, x1, y1 = boxes[i]
        expected = np.array([x0 * 0.8, y0 * 256 / 240, x1 * 0.8, y1 * 256 / 240])
        # The box is the mask's bounding rectangle (JPEG and nearest resizing: within 2 px).
        assert np.abs(data.test.boxes[k, 0] - expected).max() <= 2.5
        assert data.test.masks[k].mean() == pytest.approx((x1 - x0) * (y1 - y0) / (320 * 240), abs=0.03)


def test_tiny_imagenet_layout(tmp_path):
    meta = fixtures.write_tiny_imagenet(tmp_path / 'tiny')
    data = load_dataset(_config('tiny_imagenet', tmp_path / 'tiny', num_val=2))
    assert data.num_classes == 200  # the config's; the fixture uses 3 of the 200 ids
    assert len(data.train) == 10 and len(data.val) == 2 and len(data.test) == 6
    assert data.test.images.shape[1:] == (64, 64, 3)
    for k, name in enumerate(data.test.names):
        label, (x0, y0, x1, y1) = meta[os.path.basename(name)]
        assert data.test.labels[k] == label
        np.testing.assert_array_equal(data.test.boxes[k, 0],
                                      np.round(np.array([x0, y0, x1, y1]) * [0.2, 64 / 240, 0.2, 64 / 240]))


def test_wsolevaluation_metadata_with_several_boxes_and_masks(tmp_path):
    meta = fixtures.write_wsolevaluation(tmp_path / 'mine', masks_for_test=True)
    data = load_dataset(_config('custom', tmp_path / 'mine'))
    assert data.num_classes == 3 and (len(data.train), len(data.val), len(data.test)) == (6, 6, 6)
    first = data.val.boxes[0]
    assert (first[:, 0] >= 0).sum() == 2          # two boxes for the first image
    assert data.test.masks is not None and data.val.masks is None
    for k, name in enumerate(data.val.names):
        rel = os.path.relpath(name, tmp_path / 'mine')
        assert data.val.labels[k] == meta[rel][0]
