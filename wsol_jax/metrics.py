"""Localization and segmentation metrics (Section 4), as fractions in [0, 1].

Boxes are `[x0, y0, x1, y1]` with the clovaai/wsolevaluation `+1` pixel convention for areas.
Ground truth may hold several boxes per image: `(N, K, 4)` arrays whose unused rows are filled
with `PAD_BOX` (all -1); the best-matching valid box counts.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from wsol_jax.annotations import IGNORE, PAD_BOX, valid_boxes  # noqa: F401  (part of this module's API)


def box_iou(a, b) -> np.ndarray:
    """Element-wise IoU of broadcastable `(..., 4)` boxes; area = (x1 - x0 + 1) * (y1 - y0 + 1)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    return inter / (area_a + area_b - inter)


def best_iou(pred_boxes, gt_boxes) -> np.ndarray:
    """`(N,)` IoU of each predicted box `(N, 4)` with its best ground-truth box `(N, K, 4)`."""
    gt_boxes = np.asarray(gt_boxes)
    if gt_boxes.ndim == 2:
        gt_boxes = gt_boxes[:, None]
    ious = box_iou(np.asarray(pred_boxes)[:, None, :], gt_boxes)
    return np.max(np.where(valid_boxes(gt_boxes), ious, 0.0), axis=1)


def top_k_correct(logits, labels, k: int) -> np.ndarray:
    """`(N,)` bool: the label is among the `k` highest of `(N, C)` logits (ties broken by index)."""
    logits = np.asarray(logits)
    k = min(k, logits.shape[-1])
    top = np.argsort(-logits, axis=-1, kind='stable')[:, :k]
    return np.any(top == np.asarray(labels)[:, None], axis=1)


def localization_accuracy(
    pred_boxes, gt_boxes, predicted_labels, labels, iou_threshold: float = 0.5
) -> dict[str, float]:
    """GT-known loc, Top-1 loc and Top-1 cls (Section 4).

    GT-known loc: the box is right (IoU >= threshold) whatever the class; Top-1 loc: the box is
    right and the class prediction too; Top-1 cls: the class prediction is right.
    """
    box_ok = best_iou(pred_boxes, gt_boxes) >= iou_threshold
    cls_ok = np.asarray(predicted_labels) == np.asarray(labels)
    return {
        'gt_known_loc': float(box_ok.mean()),
        'top1_loc': float((box_ok & cls_ok).mean()),
        'top1_cls': float(cls_ok.mean()),
    }


class PxAPAccumulator:
    """Streaming PxAP, exactly as wsolevaluation's MaskEvaluator (Eq. 7-8 and the PxAP sum).

    Histograms of map values of foreground and background pixels over the thresholds
    `arange(0, 1, interval)` (plus right edges 1, 2, 3) are accumulated batch by batch, so the
    test set never sits in memory. Maps are expected in [0, 1] (wsolevaluation min-max
    normalises each map first: `boxes.normalize_maps`).
    """

    def __init__(self, interval: float = 0.01):
        self.thresholds = np.arange(0, 1, interval)
        self._edges = np.append(self.thresholds, [1.0, 2.0, 3.0])
        self.foreground_hist = np.zeros(len(self._edges) - 1)
        self.background_hist = np.zeros(len(self._edges) - 1)

    def update(self, maps, masks) -> None:
        """Add `(N, H, W)` maps and their `(N, H, W)` ground-truth masks (0: background, `IGNORE`:
        skipped, as wsolevaluation's MaskEvaluator skips OpenImages' ignore regions, other
        non-zero values: object)."""
        maps = np.asarray(maps, np.float64)
        masks = np.asarray(masks)
        if maps.shape != masks.shape:
            raise ValueError(f'maps {maps.shape} and masks {masks.shape} must have the same shape')
        foreground = (masks > 0) & (masks != IGNORE)
        self.foreground_hist += np.histogram(maps[foreground], bins=self._edges)[0]
        self.background_hist += np.histogram(maps[masks == 0], bins=self._edges)[0]

    def precision_recall(self) -> tuple[np.ndarray, np.ndarray]:
        """Precision and recall at decreasing thresholds (index 0: the empty top bin)."""
        n_foreground = self.foreground_hist.sum()
        if n_foreground <= 0:
            raise ValueError('PxAP needs at least one foreground pixel in the ground-truth masks')
        tp = self.foreground_hist[::-1].cumsum()
        fp = self.background_hist[::-1].cumsum()
        # Where nothing is predicted (tp + fp == 0) wsolevaluation divides 0 by 0; that point's
        # recall increment is 0, so any finite precision gives the same sum.
        precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
        return precision, tp / n_foreground

    def merge_over_processes(self, sum_fn) -> None:
        """Sum the histograms over hosts with `sum_fn` (`parallel.sum_over_processes`)."""
        self.foreground_hist = sum_fn(self.foreground_hist)
        self.background_hist = sum_fn(self.background_hist)

    def result(self) -> float:
        precision, recall = self.precision_recall()
        return float(np.sum(precision[1:] * np.diff(recall)))


def pxap(maps, masks, interval: float = 0.01) -> float:
    """PxAP of `(N, H, W)` maps in [0, 1] against `(N, H, W)` binary masks (a fraction)."""
    acc = PxAPAccumulator(interval)
    acc.update(maps, masks)
    return acc.result()


def _contour_boxes(map_uint8: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """wsolevaluation's `scoremap2bbox` at one threshold: every contour's box (clipped to
    `W - 1, H - 1`) and the box of the largest contour (by `cv2.contourArea`), `(K, 4)`, `(4,)`."""
    height, width = map_uint8.shape
    binary = (map_uint8 > int(threshold * map_uint8.max())).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((1, 4)), np.zeros(4)
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        boxes.append((x, y, min(x + w, width - 1), min(y + h, height - 1)))
    largest = int(np.argmax([cv2.contourArea(c) for c in contours]))
    boxes = np.asarray(boxes, np.float64)
    return boxes, boxes[largest]


def max_box_ious(scoremap: np.ndarray, gt_boxes: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For one `(H, W)` map in [0, 1] and its `(K, 4)` ground truth (`PAD_BOX` rows allowed):
    `(2, T)` best IoU per threshold, row 0 over every contour's box (MaxBoxAccV2), row 1 of the
    largest contour's box only (MaxBoxAcc, v1). A module-level function so that worker
    processes can run it."""
    gt = np.asarray(gt_boxes)
    gt = gt[valid_boxes(gt)]
    map_uint8 = (np.asarray(scoremap, np.float32) * 255).astype(np.uint8)
    out = np.zeros((2, len(thresholds)))
    for i, t in enumerate(thresholds):
        boxes, largest = _contour_boxes(map_uint8, t)
        out[0, i] = box_iou(boxes[:, None], gt[None]).max()
        out[1, i] = box_iou(largest[None], gt).max()
    return out


class MaxBoxAccAccumulator:
    """MaxBoxAcc (v1) and MaxBoxAccV2 (Choe et al., 2020) as wsolevaluation's BoxEvaluator computes them.

    For every map threshold in `arange(0, 1, interval)` the map (quantised to uint8) is binarised
    at `> int(threshold * max)`; an image counts as correct at that threshold if a candidate box
    reaches the IoU. The result per IoU is the accuracy at the best threshold.
      * v2 (`multi_contour_eval=True`): every contour's box is a candidate; IoUs `iou_thresholds`
        (percent, default 30/50/70) and their mean `maxboxacc_v2`.
      * v1 (`multi_contour_eval=False`, IoU 50 only): the largest contour's box; `maxboxacc_v1`.

    The contours (100 thresholds per map: the slow part of an evaluation) run on `executor`
    (e.g. a `concurrent.futures.ProcessPoolExecutor`) when one is given: `update` only submits
    work and returns, so the device computes the next batch meanwhile; `result` waits for it.
    """

    def __init__(self, interval: float = 0.01, iou_thresholds: Sequence[int] = (30, 50, 70), executor=None):
        self.thresholds = np.arange(0, 1, interval)
        self.iou_thresholds = tuple(iou_thresholds)
        self.num_correct = np.zeros((len(self.iou_thresholds), len(self.thresholds)))
        self.num_correct_v1 = np.zeros(len(self.thresholds))
        self.count = 0
        self._executor = executor
        self._pending = []

    def update(self, maps, gt_boxes) -> None:
        """Add `(N, H, W)` maps in [0, 1] and `(N, K, 4)` ground-truth boxes."""
        maps = np.asarray(maps, np.float32)
        gt_boxes = np.asarray(gt_boxes)
        if gt_boxes.ndim == 2:
            gt_boxes = gt_boxes[:, None]
        if len(maps) != len(gt_boxes):
            raise ValueError(f'{len(maps)} maps for {len(gt_boxes)} ground-truth entries')
        for scoremap, gt in zip(maps, gt_boxes):
            if self._executor is None:
                self._add(max_box_ious(scoremap, gt, self.thresholds))
            else:
                self._pending.append(self._executor.submit(max_box_ious, scoremap, gt, self.thresholds))

    def _add(self, ious: np.ndarray) -> None:
        self.num_correct += ious[0][None, :] >= np.asarray(self.iou_thresholds)[:, None] / 100
        self.num_correct_v1 += ious[1] >= 0.5
        self.count += 1

    def _drain(self) -> None:
        for future in self._pending:
            self._add(future.result())
        self._pending = []

    def merge_over_processes(self, sum_fn) -> None:
        """Sum the counts over hosts with `sum_fn` (`parallel.sum_over_processes`)."""
        self._drain()
        self.num_correct = sum_fn(self.num_correct)
        self.num_correct_v1 = sum_fn(self.num_correct_v1)
        self.count = int(sum_fn(np.array(self.count)))

    def result(self) -> dict[str, float]:
        self._drain()
        if self.count == 0:
            raise ValueError('MaxBoxAcc needs at least one image')
        best = (self.num_correct / self.count).max(axis=1)
        out = {f'maxboxacc_iou{t}': float(b) for t, b in zip(self.iou_thresholds, best)}
        out['maxboxacc_v2'] = float(best.mean())
        out['maxboxacc_v1'] = float((self.num_correct_v1 / self.count).max())
        return out
