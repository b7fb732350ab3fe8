"""The data package (synthetic benchmark, dataset transforms and random erasing, batching, triplets,
splits) and the data settings' checks."""

import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import load_config, tiny_synthetic
from wsol_jax.data import check_source, dataset, load_dataset, synthetic
from wsol_jax.data.dataset import random_erase
from wsol_jax.errors import ConfigError, DataError
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
        windows = [src[y : y + 4, x : x + 4] for y in range(5) for x in range(5)]
        assert any(np.array_equal(crop, w) or np.array_equal(crop, w[:, ::-1]) for w in windows)
    np.testing.assert_allclose(
        np.asarray(dataset.center_crop(images, 4)), dataset.normalize(images[:, 2:6, 2:6]), atol=1e-6
    )


def test_augment_without_flips_crops_only_unmirrored_windows():
    images = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
    for seed in range(4):
        out = np.asarray(dataset.augment(images, jax.random.key(seed), 4, flip=False))
        pixels = np.rint((out * dataset.IMAGENET_STD + dataset.IMAGENET_MEAN) * 255).astype(int)
        for src, crop in zip(images, pixels):
            assert any(np.array_equal(crop, src[y : y + 4, x : x + 4]) for y in range(5) for x in range(5))
    # Flips on, nothing else: the default transform, number for number.
    np.testing.assert_array_equal(
        np.asarray(dataset.Augment(4)(images, jax.random.key(1))),
        np.asarray(dataset.augment(images, jax.random.key(1), 4)),
    )


def test_scale_jitter_zooms_within_its_range():
    """On a horizontal ramp (pixel value = column), a window of `side` pixels resized to `crop`
    steps by side / crop = 1 / zoom per output column: linear interpolation keeps a ramp a ramp."""
    size, crop, jitter = 64, 32, 0.5
    ramp = np.broadcast_to(np.arange(size, dtype=np.uint8)[None, :, None], (size, size, 3))
    images = np.repeat(ramp[None] * 3, 64, axis=0)  # values 0..189: no clipping
    out = np.asarray(dataset.augment(images, jax.random.key(0), crop, flip=False, scale_jitter=jitter))
    values = (out * dataset.IMAGENET_STD + dataset.IMAGENET_MEAN)[..., 0] * 255 / 3  # back to columns
    steps = np.diff(values[:, crop // 2, 2:-2], axis=1)  # away from the borders' antialiasing
    per_image = steps.mean(axis=1)
    # one zoom per image (the antialiasing kernel, sampled at whole pixels, ripples the steps)
    assert np.abs(steps - per_image[:, None]).max() < 0.15
    # zoom in [1/1.5, 1.5], and the window never exceeds the image: side <= 64 -> step <= 2
    assert per_image.min() >= 1 / 1.5 - 1e-3 and per_image.max() <= min(1.5, size / crop) + 1e-3
    assert per_image.max() - per_image.min() > 0.5  # the zooms differ between images
    # no vertical change: the ramp is constant down each column
    assert np.abs(values[:, 0] - values[:, -1]).max() < 1e-3


def test_colour_jitter_scales_brightness_and_keeps_grey_grey():
    grey = np.full((256, 8, 8, 3), 100, np.uint8)
    out = np.asarray(dataset.augment(grey, jax.random.key(0), 8, colour_jitter=0.4))
    unit = out * dataset.IMAGENET_STD + dataset.IMAGENET_MEAN
    assert np.abs(unit - unit[..., :1]).max() < 1e-5  # saturation leaves grey grey
    assert np.abs(unit - unit[:, :1, :1]).max() < 1e-5  # contrast leaves a flat image flat
    factor = unit[:, 0, 0, 0] / (100 / 255)  # only brightness changes a flat grey image
    assert 0.6 - 1e-5 <= factor.min() < 0.7 and 1.3 < factor.max() <= 1.4 + 1e-5
    colourful = np.zeros((1, 8, 8, 3), np.uint8)
    colourful[..., 0] = 200
    out = np.asarray(dataset.augment(colourful, jax.random.key(3), 8, colour_jitter=0.4))
    unit = out * dataset.IMAGENET_STD + dataset.IMAGENET_MEAN
    assert unit.min() >= -1e-6 and unit.max() <= 1 + 1e-6


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
    with pytest.raises(DataError, match='two classes'):
        dataset.triplet_indices(np.zeros(4, int), np.arange(4), jax.random.key(0))


@pytest.fixture
def deadline():
    """Fail a test that runs past 20 s instead of hanging the suite (a sampling loop that spins)."""

    def expire(*_):
        raise TimeoutError('did not finish in 20 s')

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_triplets_with_a_single_image_class_finish(deadline):
    labels = np.array([0, 0, 0, 1, 2, 2])  # class 1 has one training image
    t = dataset.triplet_indices(labels, np.array([3, 3, 0, 4, 3]), jax.random.key(0))
    assert t.shape == (5, 3)
    np.testing.assert_array_equal(t[t[:, 0] == 3, 1], 3)  # its anchor is its own positive
    assert (labels[t[:, 2]] != labels[t[:, 0]]).all()


@pytest.mark.parametrize('seed', range(5))
def test_triplet_property_random_labels(deadline, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 1 + seed * 3, 40) if seed else np.r_[np.zeros(39, int), 1]
    labels[0] = labels.max() + 1  # at least one singleton class, and two classes
    anchors = rng.integers(0, 40, 64)
    t = dataset.triplet_indices(labels, anchors, jax.random.key(seed))
    np.testing.assert_array_equal(t[:, 0], anchors)
    assert (labels[t[:, 1]] == labels[anchors]).all() and (labels[t[:, 2]] != labels[anchors]).all()
    alone = np.bincount(labels)[labels[anchors]] == 1
    assert (t[alone, 1] == anchors[alone]).all() and (t[~alone, 1] != anchors[~alone]).all()


def test_triplet_draws_are_uniform():
    labels = np.array([2, 0, 2, 1, 2, 0])
    t = dataset.triplet_indices(labels, np.full(3000, 2), jax.random.key(3))
    positives, negatives = np.bincount(t[:, 1], minlength=6), np.bincount(t[:, 2], minlength=6)
    assert positives[[1, 2, 3, 5]].sum() == 0 and 1300 < positives[0] < 1700 and 1300 < positives[4] < 1700
    assert negatives[[0, 2, 4]].sum() == 0 and all(850 < negatives[i] < 1150 for i in (1, 3, 5))


def test_data_settings_fail_with_one_clear_error():
    c = load_config('cub', 'method1')
    c.data.source, c.data.root = 'bogus', ''  # the source is named, not the empty root
    with pytest.raises(ConfigError, match=r"^config.data.source: unknown source 'bogus'; choose one of synthetic, cub"):
        check_source(c)
    with pytest.raises(ConfigError, match=r"^config.data.source: unknown source 'bogus'"):
        load_dataset(c)
    c.data.source = 'cub'
    with pytest.raises(ConfigError, match=r'^config.data.root is empty'):
        check_source(c)
    c.data.root, c.data.num_val = '/nowhere', 0
    with pytest.raises(ConfigError, match=r'^config.data.num_val must be at least 1 with data.val_split=holdout'):
        check_source(c)
    c.data.num_val, c.data.source, c.data.tfds_name = 10, 'tfds', 'imagenet2012'
    with pytest.raises(ConfigError, match=r"^config.data.tfds_name must be one of caltech_birds2011, .*'imagenet2012'"):
        check_source(c)
    c.data.tfds_name = 'cars196'
    check_source(c)  # reads nothing: /nowhere is not looked at
    c.data.source = 'synthetic'  # another dataset's config lacks the generator's keys
    with pytest.raises(ConfigError, match=r'^config.data.num_train is missing: data.source=synthetic needs'):
        check_source(c)


def test_synthetic_split_sizes_are_checked():
    c = tiny_synthetic('method1')
    check_source(c)
    for key in ('num_val', 'num_train', 'num_test'):
        c.data[key] = 0
        with pytest.raises(ConfigError, match=rf'^config.data.{key} must be at least 1'):
            load_dataset(c)
        c.data[key] = 8
    with pytest.raises(ConfigError, match=r'^config.data.num_val must be at least 1'):
        synthetic.make_split(0, 'val', 0, 32, 4)


def test_split_validates_shapes():
    with pytest.raises(ValueError, match='uint8'):
        dataset.Split(np.zeros((2, 8, 8, 3), np.float32), np.zeros(2, np.int32))
    with pytest.raises(ValueError, match='labels has 3 entries for 2 images'):
        dataset.Split(np.zeros((2, 8, 8, 3), np.uint8), np.zeros(3, np.int32))


def test_a_host_share_of_only_padding_gives_empty_ground_truth():
    """With several hosts, one host's rows of the last evaluation batch can be all padding: its
    ground truth is empty arrays (a crash there left the other host waiting at a barrier)."""
    from wsol_jax.metrics import PxAPAccumulator

    masks = dataset.crop_protocol_masks([], 40, 32)
    assert masks.shape == (0, 32, 32) and masks.dtype == np.uint8
    acc = PxAPAccumulator(0.1)
    acc.update(np.zeros((0, 32, 32)), masks)
    assert acc.foreground_hist.sum() == 0 and acc.background_hist.sum() == 0
    one = np.full((1, 50, 60), 1, np.uint8)
    assert dataset.crop_protocol_masks([one[0]], 40, 32).shape == (1, 32, 32)


def test_random_erase_sets_a_rectangle_to_the_mean_colour():
    images = jnp.ones((64, 32, 32, 3))
    out = np.asarray(random_erase(images, jax.random.key(0), prob=0.5))
    erased = (out == 0).all(-1)
    share = erased.mean(axis=(1, 2))
    assert 0.2 < np.mean(share > 0) < 0.8  # about half the images
    assert share.max() <= 0.45 and share[share > 0].min() >= 0.02
    for m in erased[share > 0]:  # one axis-aligned rectangle each
        ys, xs = np.nonzero(m)
        assert m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].all()
    np.testing.assert_array_equal(np.asarray(random_erase(images, jax.random.key(0), prob=0.0)), 1.0)


def test_the_config_refuses_an_unknown_erasing_fill():
    from wsol_jax import config as config_lib
    from wsol_jax.errors import ConfigError

    c = config_lib.base_config('method1')
    c.f.erase_fill = 'grey'
    with pytest.raises(ConfigError, match=r"^config.f.erase_fill: must be one of \('mean', 'noise'\), got 'grey'"):
        config_lib.validate_training(c)


def test_random_erase_with_noise_fills_the_same_rectangles_with_random_colours():
    images = jnp.full((64, 32, 32, 3), 9.0)  # outside every normalised colour: erased pixels stand out
    mean = np.asarray(random_erase(images, jax.random.key(0), prob=0.5))
    noise = np.asarray(random_erase(images, jax.random.key(0), prob=0.5, fill='noise'))
    np.testing.assert_array_equal(noise != 9.0, mean != 9.0)  # the rectangles do not depend on the fill
    pixels = noise[noise != 9.0].reshape(-1, 3)
    # uniform colours in [0, 1], normalised by ImageNet's statistics: (0 - mean) / std .. (1 - mean) / std
    lo, hi = (0 - dataset.IMAGENET_MEAN) / dataset.IMAGENET_STD, (1 - dataset.IMAGENET_MEAN) / dataset.IMAGENET_STD
    assert len(pixels) > 1000 and (pixels >= lo - 1e-6).all() and (pixels <= hi + 1e-6).all()
    np.testing.assert_allclose(pixels.mean(0), (0.5 - dataset.IMAGENET_MEAN) / dataset.IMAGENET_STD, atol=0.05)
