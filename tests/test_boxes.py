"""Eq. 5, the largest-contour box and Eq. 6 on hand-built maps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wsol_jax.boxes import (
    boxes_from_maps,
    containment_score,
    normalize_maps,
    selection_scores,
    threshold_maps,
    thresholded_maps,
)


def test_threshold_keeps_values_from_a_tenth_of_the_max():
    m = np.array([[[1.0, 0.1, 0.09], [0.5, 0.0, 0.2]]])
    expected = np.array([[[1.0, 0.1, 0.0], [0.5, 0.0, 0.2]]])
    np.testing.assert_allclose(threshold_maps(m), expected)
    np.testing.assert_allclose(np.asarray(threshold_maps(jnp.asarray(m))), expected)
    np.testing.assert_allclose(threshold_maps(m, ratio=0.5), [[[1.0, 0, 0], [0.5, 0, 0]]])


def test_larger_of_two_blobs_wins():
    m = np.zeros((1, 20, 30), np.float32)
    m[0, 2:5, 3:6] = 1.0  # 3x3, the maximum
    m[0, 8:18, 10:25] = 0.3  # 10x15, weaker but larger and above max/10
    np.testing.assert_array_equal(boxes_from_maps(m), [[10, 8, 25, 18]])
    np.testing.assert_array_equal(boxes_from_maps(m, box_rule='literal'), [[10, 8, 25, 18]])


def test_nested_contours_give_the_outer_box():
    m = np.zeros((1, 32, 32), np.float32)
    m[0, 4:28, 4:28] = 1.0  # a ring ...
    m[0, 8:24, 8:24] = 0.0  # ... with a hole ...
    m[0, 12:20, 12:20] = 1.0  # ... and a blob inside the hole
    np.testing.assert_array_equal(boxes_from_maps(m), [[4, 4, 28, 28]])


def test_empty_and_below_threshold_maps():
    m = np.zeros((2, 8, 8), np.float32)
    m[1, 3, 5] = 0.7  # a single pixel: w = h = 1
    np.testing.assert_array_equal(boxes_from_maps(m), [[0, 0, 0, 0], [5, 3, 6, 4]])


def test_boxes_reject_wrong_rank():
    with pytest.raises(ValueError, match='N, H, W'):
        boxes_from_maps(np.zeros((8, 8)))


def test_containment_score_hand_computed():
    m = np.zeros((2, 4, 5), np.float32)
    m[0, 1, 1] = 2.0  # inside [1, 1, 3, 3)
    m[0, 2, 2] = 1.0  # inside
    m[0, 3, 4] = 1.0  # outside: total 4, inside 3
    boxes = np.array([[1, 1, 3, 3], [0, 0, 5, 4]])
    s = containment_score(m, boxes)  # the second map has no mass
    np.testing.assert_allclose(np.asarray(s), [0.75, 0.0])


def test_containment_score_jits_and_matches_loop():
    rng = np.random.default_rng(0)
    maps = threshold_maps(rng.random((6, 16, 16)).astype(np.float32))
    boxes = boxes_from_maps(maps)
    got = np.asarray(jax.jit(containment_score)(jnp.asarray(maps), jnp.asarray(boxes)))
    for m, (x0, y0, x1, y1), s in zip(maps, boxes, got):
        assert s == pytest.approx(m[y0:y1, x0:x1].sum() / m.sum(), rel=1e-5)


def test_box_of_full_map_contains_everything():
    maps = np.ones((1, 32, 32), np.float32)
    boxes = boxes_from_maps(maps, box_rule='literal')
    np.testing.assert_array_equal(boxes, [[0, 0, 32, 32]])
    assert float(containment_score(maps, boxes)[0]) == pytest.approx(1.0)
    # A flat map carries no location: min-max normalisation leaves nothing to keep.
    np.testing.assert_array_equal(boxes_from_maps(maps), [[0, 0, 0, 0]])


def test_normalize_maps():
    m = np.array([[[2.0, 4.0], [3.0, 6.0]], [[1.0, 1.0], [1.0, 1.0]]])
    np.testing.assert_allclose(normalize_maps(m), [[[0, 0.5], [0.25, 1]], [[0, 0], [0, 0]]])


def _unsharp_map():
    """Background 0.3 everywhere, an object of 0.9 at rows 4..11, columns 6..17 (a map whose
    minimum is far from 0, as early in training)."""
    m = np.full((1, 20, 24), 0.3, np.float32)
    m[0, 4:12, 6:18] = 0.9
    return m


def test_normalized_rule_finds_the_object_of_an_unsharp_map():
    m = _unsharp_map()
    box = boxes_from_maps(m)  # default: min-max normalised first
    np.testing.assert_array_equal(box, [[6, 4, 18, 12]])
    hat = thresholded_maps(m)
    assert float(containment_score(hat, box)[0]) == pytest.approx(1.0)
    # S < 1 as soon as some weight lies outside the box: add a second, smaller blob.
    m2 = m.copy()
    m2[0, 15:18, 1:3] = 0.9
    s = float(containment_score(thresholded_maps(m2), boxes_from_maps(m2))[0])
    assert s == pytest.approx(96 / (96 + 6))


def test_literal_rule_keeps_the_whole_unsharp_map():
    m = _unsharp_map()
    box = boxes_from_maps(m, box_rule='literal')  # Eq. 5 as written: 0.3 >= 0.09 is kept
    np.testing.assert_array_equal(box, [[0, 0, 24, 20]])
    hat = thresholded_maps(m, box_rule='literal')
    assert float(containment_score(hat, box)[0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match='box_rule'):
        thresholded_maps(m, box_rule='other')


def test_whole_image_blobs_score_zero_for_the_selection():
    """A map whose box covers (nearly) the whole image has S = 1 by Eq. 6 whatever it holds; for
    the selection it is degenerate and scores 0, as does an empty map. A ring along the borders
    keeps only 44% of the pixels but its box is the image: degenerate too."""
    whole = np.full((1, 16, 16), 0.8, np.float32)
    whole[0, 0, 0] = 0.0  # after normalisation 255/256 of the pixels are kept
    obj = np.zeros((1, 16, 16), np.float32)
    obj[0, 2:10, 3:9] = 1.0
    empty = np.zeros((1, 16, 16), np.float32)
    ring = np.ones((1, 16, 16), np.float32)
    ring[0, 2:14, 2:14] = 0.0  # 256 - 144 = 112 of 256 pixels kept
    maps = np.concatenate([whole, obj, empty, ring])
    hat = thresholded_maps(maps)
    boxes = boxes_from_maps(maps)
    s, degenerate = selection_scores(jnp.asarray(hat), jnp.asarray(boxes), max_coverage=0.95)
    np.testing.assert_allclose(np.asarray(containment_score(hat, boxes)), [1.0, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(np.asarray(s), [0.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(np.asarray(degenerate), [True, False, True, True])
    s_off, _ = selection_scores(jnp.asarray(hat), jnp.asarray(boxes), max_coverage=1.0)
    np.testing.assert_allclose(np.asarray(s_off), [1.0, 1.0, 0.0, 1.0])
