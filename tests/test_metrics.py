"""IoU, localization accuracies, PxAP (against scikit-learn) and MaxBoxAccV2."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from wsol_jax import metrics


def test_box_iou_plus_one_convention():
    # [0, 0, 9, 9] covers 10x10 = 100 pixels; [5, 0, 14, 9] another 100; overlap 5x10 = 50.
    assert metrics.box_iou([0, 0, 9, 9], [5, 0, 14, 9]) == pytest.approx(50 / 150)
    assert metrics.box_iou([0, 0, 9, 9], [0, 0, 9, 9]) == pytest.approx(1.0)
    assert metrics.box_iou([0, 0, 4, 4], [10, 10, 12, 12]) == 0.0
    np.testing.assert_allclose(metrics.box_iou([[0, 0, 1, 1]], [[1, 1, 2, 2]]), [1 / 7])


def test_localization_accuracy_uses_best_gt_box():
    pred = np.array([[0, 0, 9, 9], [0, 0, 9, 9], [20, 20, 29, 29]])
    gt = np.array(
        [
            [[50, 50, 60, 60], [0, 0, 9, 9]],  # second box matches
            [[0, 0, 9, 9], [-1, -1, -1, -1]],  # padding row ignored
            [[0, 0, 9, 9], [-1, -1, -1, -1]],
        ]
    )  # miss
    out = metrics.localization_accuracy(pred, gt, predicted_labels=[1, 0, 2], labels=[1, 1, 2])
    assert out == pytest.approx({'gt_known_loc': 2 / 3, 'top1_loc': 1 / 3, 'top1_cls': 2 / 3})


def test_pxap_equals_sklearn_average_precision_on_grid_maps():
    rng = np.random.default_rng(0)
    grid = np.arange(0, 1, 0.01)
    masks = rng.random((5, 12, 12)) > 0.6
    # Scores correlated with the mask, quantised to the threshold grid.
    raw = np.clip(0.35 * masks + rng.random((5, 12, 12)) * 0.65, 0, 0.999)
    maps = grid[np.floor(raw * 100).astype(int)]
    expected = average_precision_score(masks.ravel(), maps.ravel())
    assert metrics.pxap(maps, masks) == pytest.approx(expected, rel=1e-9)


def test_pxap_streaming_equals_one_shot():
    rng = np.random.default_rng(1)
    maps, masks = rng.random((6, 10, 10)), rng.random((6, 10, 10)) > 0.5
    acc = metrics.PxAPAccumulator()
    for i in range(0, 6, 2):
        acc.update(maps[i : i + 2], masks[i : i + 2])
    assert acc.result() == pytest.approx(metrics.pxap(maps, masks))


def test_pxap_perfect_map_is_one_and_needs_foreground():
    masks = np.zeros((1, 8, 8), bool)
    masks[0, 2:5, 2:5] = True
    assert metrics.pxap(masks.astype(float), masks) == pytest.approx(1.0)
    with pytest.raises(ValueError, match='foreground'):
        metrics.pxap(np.ones((1, 4, 4)), np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match='same shape'):
        metrics.pxap(np.ones((1, 4, 4)), np.zeros((1, 4, 5)))


def test_maxboxacc_counts_any_contour():
    # Two blobs: a large weak one (not the object) and a small strong one matching the GT box.
    m = np.zeros((1, 40, 40), np.float32)
    m[0, 2:32, 2:32] = 0.5
    m[0, 34:39, 34:39] = 1.0
    gt = np.array([[[34, 34, 39, 39]]])  # boundingRect [x, y, x + w, y + h] of the 5x5 blob
    acc = metrics.MaxBoxAccAccumulator()
    acc.update(m, gt)
    out = acc.result()
    assert out['maxboxacc_iou70'] == 1.0 and out['maxboxacc_v2'] == 1.0
    # The paper's single-contour rule picks the large blob and misses.
    from wsol_jax.boxes import boxes_from_maps

    assert metrics.best_iou(boxes_from_maps(m), gt)[0] < 0.1


def test_maxboxacc_partial_hits():
    # A box half the GT's width: IoU 0.5 -> counts at 30 and 50, not at 70.
    m = np.zeros((1, 20, 20), np.float32)
    m[0, 0:10, 0:5] = 1.0  # contour box [0, 0, 5, 10] -> 6 x 11 pixels with +1
    gt = np.array([[[0, 0, 11, 10]]])  # 12 x 11 pixels: IoU = 66 / 132 = 0.5
    acc = metrics.MaxBoxAccAccumulator()
    acc.update(m, gt)
    out = acc.result()
    assert (out['maxboxacc_iou30'], out['maxboxacc_iou50'], out['maxboxacc_iou70']) == (1.0, 1.0, 0.0)
    assert out['maxboxacc_v2'] == pytest.approx(2 / 3)


def test_maxboxacc_v1_takes_only_the_largest_contour():
    """A strong 30x30 blob and a weak 5x5 one: at every threshold the largest contour is the
    large blob (IoU with the small GT ~0.03), so v1 (largest box, IoU 0.5) is 0 while V2 finds
    the small blob below threshold 0.5. With the GT on the large blob, both are 1."""
    m = np.zeros((1, 40, 40), np.float32)
    m[0, 2:32, 2:32] = 1.0
    m[0, 34:39, 34:39] = 0.5
    small, large = np.array([[[34, 34, 39, 39]]]), np.array([[[2, 2, 32, 32]]])
    for gt, v1, v2_50 in ((small, 0.0, 1.0), (large, 1.0, 1.0)):
        acc = metrics.MaxBoxAccAccumulator()
        acc.update(m, gt)
        out = acc.result()
        assert out['maxboxacc_v1'] == v1 and out['maxboxacc_iou50'] == v2_50


def test_maxboxacc_worker_processes_give_the_same_numbers():
    import concurrent.futures
    import multiprocessing

    rng = np.random.default_rng(0)
    maps = rng.random((6, 24, 24)).astype(np.float32)
    gt = np.array([[[2, 3, 15, 20]], [[0, 0, 23, 23]], [[5, 5, 9, 9]]] * 2)
    inline = metrics.MaxBoxAccAccumulator()
    inline.update(maps, gt)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context('spawn')) as pool:
        pooled = metrics.MaxBoxAccAccumulator(executor=pool)
        pooled.update(maps[:4], gt[:4])
        pooled.update(maps[4:], gt[4:])
        assert pooled.result() == inline.result()


def test_top_k_correct_hand_computed():
    logits = np.array([[0.1, 0.5, 0.3, 0.2], [0.9, 0.0, 0.05, 0.04], [0.2, 0.2, 0.1, 0.5]])
    labels = np.array([2, 3, 1])
    np.testing.assert_array_equal(metrics.top_k_correct(logits, labels, 1), [False, False, False])
    # row 3: classes 0 and 1 tie; the lower index wins, so label 1 is not in the top 2
    np.testing.assert_array_equal(metrics.top_k_correct(logits, labels, 2), [True, False, False])
    np.testing.assert_array_equal(metrics.top_k_correct(logits, labels, 3), [True, True, True])
    np.testing.assert_array_equal(metrics.top_k_correct(logits, labels, 9), [True, True, True])  # k > classes


def test_pxap_skips_ignored_pixels():
    """IGNORE pixels count neither as object nor as background (wsolevaluation's OpenImages):
    a map that is high only on ignored pixels loses nothing."""
    maps = np.zeros((1, 4, 4))
    maps[0, :2, :2] = 0.8  # object
    maps[0, 3, 3] = 1.0  # the highest value, on an ignored pixel
    masks = np.zeros((1, 4, 4), np.uint8)
    masks[0, :2, :2] = 1
    masks[0, 3, 3] = metrics.IGNORE
    assert metrics.pxap(maps, masks) == pytest.approx(1.0)
    masks[0, 3, 3] = 0  # counted as background: precision 4/5 where recall rises
    assert metrics.pxap(maps, masks) == pytest.approx(0.8)
