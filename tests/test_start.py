"""g's start (`wsol_jax.train.start`): f's agreement with itself on dimmed images, and the untrained
map's value it picks, against hand-computed cases and a NumPy count of the same rule."""

import jax.numpy as jnp
import numpy as np
import pytest

from wsol_jax.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from wsol_jax.train import start


def test_classifier_agreement_counts_equal_top_classes():
    image = np.array([[3.0, 1.0], [0.0, 2.0], [5.0, 4.0], [1.0, 0.0]])
    dimmed = np.array([[0.2, 0.1], [0.3, 0.1], [0.1, 0.9], [0.4, 0.3]])  # rows 1 and 2 change class
    assert start.agreement(image, dimmed, embedding=False) == 0.5


def test_embedding_agreement_is_nearer_to_its_own_image_than_the_median_pair():
    # Four unit directions at 0, 90, 180, 270 degrees: the distinct pairs' cosines are 0 (four pairs)
    # and -1 (two), median 0. A dimmed output 30 degrees off its image (cos 0.87) agrees; one 100
    # degrees off (cos -0.17) does not.
    angles = np.deg2rad([0, 90, 180, 270])
    image = np.stack([np.cos(angles), np.sin(angles)], -1)
    turned = np.deg2rad([30, 90 + 100, 180, 270 - 30])
    dimmed = 0.3 * np.stack([np.cos(turned), np.sin(turned)], -1)  # the scale does not count
    assert start.agreement(image, dimmed, embedding=True) == 0.75
    with pytest.raises(ValueError, match='two'):
        start.agreement(image[:1], dimmed[:1], embedding=True)
    with pytest.raises(ValueError, match='shape'):
        start.agreement(image, dimmed[:3], embedding=False)


def _threshold_f(threshold: float):
    """A classifier whose answer is whether the normalised image's mean exceeds `threshold`:
    dimming scales the mean, so the answer flips below a weight that the test can count."""
    return lambda x: jnp.stack([jnp.mean(x, axis=(1, 2, 3)) - threshold, jnp.zeros(len(x))], -1)


def test_start_weight_is_the_first_candidate_where_f_agrees_as_a_numpy_count_says():
    rng = np.random.default_rng(0)
    images = rng.integers(120, 256, size=(40, 8, 8, 3), dtype=np.uint8)  # bright: positive normalised means
    means = ((images / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).mean(axis=(1, 2, 3))
    threshold = float(np.quantile(means, 0.2)) * 0.75  # every image answers 0 undimmed; some flip when dimmed
    assert (means > threshold).all()
    expected = None
    counts = {}
    for w in start.CANDIDATES:
        counts[w] = float(np.mean(w * means > threshold))
        if expected is None and counts[w] >= 0.9:
            expected = w
    assert expected not in (None, start.CANDIDATES[0])  # the case raises the start
    weight, measured = start.start_weight(_threshold_f(threshold), images, 8, 0.5, 0.9, False, 'normalized', 16)
    assert weight == expected
    assert measured == pytest.approx({w: counts[w] for w in start.CANDIDATES if w <= expected})
    # off (the paper): the floor, nothing measured; a floor above the answer is kept as it is
    assert start.start_weight(_threshold_f(threshold), images, 8, 0.5, 0.0, False, 'normalized') == (0.5, {})
    assert start.start_weight(_threshold_f(threshold), images, 8, 0.97, 0.9, False, 'normalized')[0] == 0.97


def test_start_weight_takes_the_most_agreeing_candidate_when_none_reaches_the_bar():
    rng = np.random.default_rng(1)
    images = rng.integers(120, 256, size=(40, 8, 8, 3), dtype=np.uint8)
    means = ((images / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).mean(axis=(1, 2, 3))
    threshold = float(np.median(means)) * 0.95  # at 0.95 about half the images keep their answer
    counts = {w: float(np.mean((w * means > threshold) == (means > threshold))) for w in start.CANDIDATES}
    assert max(counts.values()) < 0.9
    weight, measured = start.start_weight(_threshold_f(threshold), images, 8, 0.5, 0.9, False, 'normalized', 16)
    assert measured == pytest.approx(counts)
    assert weight == min(w for w, a in counts.items() if a == max(counts.values()))
