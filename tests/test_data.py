"""Synthetic benchmark, transforms and batching."""
import jax
import numpy as np
import pytest

from wsol_jax.data import dataset, synthetic
from wsol_jax.metrics import PAD_BOX


def test_synthetic_is_deterministic_and_annotations_agree():
    a = synthetic.make_split(3, 'train', 12, 64, 6, body_class_signal=1.0)
    b = synthetic.make_split(3, 'train', 12, 64, 6, body_class_signal=1.0)
    np.testing.assert_array_equal(a.images, b.images)
    c = synthetic.make_split(3, 'test', 12, 64, 6, body_class_signal=1.0)
    assert not np.array_equal(a.images, c.images)
    assert a.images.dtype == np.uint8 and a.images.shape == (12, 64, 64, 3)
    assert sorted(np.bincount(a.labels)) == [2] * 6
    for box, mask in zip(a.boxes[:, 0], a.masks):
        ys, xs = np.nonzero(mask)
        # The GT box is the mask's bounding rectangle [x, y, x + w, y + h].
        np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        area = (box[2] - box[0]) * (box[3] - box[1])
        assert 0.05 * 64 * 64 < area < 0.9 * 64 * 64


def test_discriminative_part_is_small():
    rng = np.random.default_rng(0)
    for label in range(6):
        image, box, mask = synthetic.make_image(rng, label, 64, num_distractors=0, body_class_signal=1.0)
        color = synthetic.PART_COLORS[label % 2]
        part = np.all(np.abs(image.astype(float) - color) < 40, axis=-1) & (mask > 0)
        assert 0 < part.sum() < 0.15 * mask.sum()


def test_center_crop_boxes_256_to_224_hand_checked():
    boxes = np.array([[[10, 20, 200, 250], [-1, -1, -1, -1]]])
    out = dataset.center_crop_boxes(boxes, 256, 224)
    # x - 16, clipped to [0, 223]; the padding row stays padding.
    np.testing.assert_array_equal(out, [[[0, 4, 184, 223], PAD_BOX]])


def test_augment_crops_flips_and_normalizes():
    images = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
    out = np.asarray(dataset.augment(images, jax.random.key(0), 4))
    assert out.shape == (2, 4, 4, 3)
    pixels = out * dataset.IMAGENET_STD + dataset.IMAGENET_MEAN
    # Every output is some 4x4 window of its input, possibly mirrored.
    for src, crop in zip(images, np.rint(pixels * 255).astype(int)):
        windows = [src[y:y + 4, x:x + 4] for y in range(5) for x in range(5)]
        assert any(np.array_equal(crop, w) or np.array_equal(crop, w[:, ::-1]) for w in windows)
    np.testing.assert_allclose(np.asarray(dataset.center_crop(images, 4)),
                               dataset.normalize(images[:, 2:6, 2:6]), atol=1e-6)


def test_batches_cover_the_split():
    seen = np.concatenate(list(dataset.train_batches(10, 3, jax.random.key(0))))
    assert len(seen) == 9 and len(set(seen)) == 9
    batches = list(dataset.eval_batches(10, 4))
    assert [n for _, n in batches] == [4, 4, 2] and all(len(i) == 4 for i, _ in batches)


def test_triplets_are_same_and_other_class():
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    t = dataset.triplet_indices(labels, np.arange(7), jax.random.key(1))
    assert (labels[t[:, 0]] == labels[t[:, 1]]).all() and (t[:, 0] != t[:, 1]).all()
    assert (labels[t[:, 0]] != labels[t[:, 2]]).all()
    with pytest.raises(ValueError, match='two classes'):
        dataset.triplet_indices(np.zeros(4, int), np.arange(4), jax.random.key(0))


def test_split_validates_shapes():
    with pytest.raises(ValueError, match='uint8'):
        dataset.Split(np.zeros((2, 8, 8, 3), np.float32), np.zeros(2, np.int32))
    with pytest.raises(ValueError, match='labels has 3 entries for 2 images'):
        dataset.Split(np.zeros((2, 8, 8, 3), np.uint8), np.zeros(3, np.int32))
