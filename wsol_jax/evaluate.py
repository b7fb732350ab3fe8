"""Stage evaluate: the selected epoch of `g`, its last epoch and the CAM baseline on the test split.

For each: boxes from the paper's rule (Eq. 5 + largest contour, under `eval.box_rule`, the same
rule that scored the epochs for the selection), GT-known loc, Top-1 loc (with the classifier
`f`), Top-1 cls; and, after wsolevaluation's per-map min-max normalisation, PxAP (where masks
exist) and MaxBoxAccV2. Everything streams over the test set.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from wsol_jax import inference, localization, metrics, parallel
from wsol_jax.data.dataset import center_crop_boxes, center_crop_masks
from wsol_jax.data.pipeline import map_split
from wsol_jax.errors import DataError
from wsol_jax.train import stages


@dataclasses.dataclass
class Samples:
    """What the report draws for the first few test images."""
    indices: np.ndarray
    maps: dict[str, np.ndarray]
    boxes: dict[str, np.ndarray]
    gt_boxes: np.ndarray


def _score_variant(ctx, name, fn, split, gt_boxes, gt_masks, predicted, n_samples):
    """`fn(batch) -> maps` or `(maps, M_hat)`: the metrics of one kind of map over the test split."""
    cfg = ctx.config
    box_ok, pxap_acc = [], metrics.PxAPAccumulator(cfg.eval.pxap_interval)
    maxbox_acc = metrics.MaxBoxAccV2Accumulator(cfg.eval.pxap_interval, tuple(cfg.eval.maxboxacc_ious))
    sample_maps, sample_boxes = [], []
    for out, valid in map_split(fn, split, cfg.eval.batch_size, ctx.mesh):
        maps = parallel.to_host(out[0])[:len(valid)]
        if len(out) == 2:   # g: M_hat was computed on the device with the box rule
            boxes = localization.boxes_from_thresholded(parallel.to_host(out[1])[:len(valid)])
        else:
            boxes = localization.boxes_from_maps(maps, cfg.eval.threshold_ratio, cfg.eval.box_rule)
        box_ok.append(metrics.best_iou(boxes, gt_boxes[valid]) >= 0.5)
        normalized = localization.normalize_maps(maps)
        if gt_masks is not None:
            pxap_acc.update(normalized, gt_masks[valid])
        maxbox_acc.update(normalized, gt_boxes[valid])
        if sum(map(len, sample_maps)) < n_samples:
            sample_maps.append(maps)
            sample_boxes.append(boxes)
    box_ok = np.concatenate(box_ok)
    cls_ok = predicted == split.labels
    result = {'gt_known_loc': float(box_ok.mean()), 'top1_loc': float((box_ok & cls_ok).mean()),
              'top1_cls': float(cls_ok.mean()), **maxbox_acc.result()}
    if gt_masks is not None:
        result['pxap'] = pxap_acc.result()
    print(f'[evaluate] {name}: ' + ' '.join(f'{k}={v:.4f}' for k, v in result.items()))
    return result, np.concatenate(sample_maps)[:n_samples], np.concatenate(sample_boxes)[:n_samples]


def evaluate(ctx: stages.Context) -> tuple[dict, Samples]:
    """Returns `({variant: metrics}, samples for the overlays)`; variants are
    `weight_map_selected`, `weight_map_last` and `cam`."""
    cfg, split = ctx.config, ctx.data.test
    if split.boxes is None:
        raise DataError('the test split has no boxes (e.g. TFDS oxford_flowers102): localization cannot be '
                        'evaluated; use a source with boxes or masks')
    selection = stages.load_selection(ctx)
    f_model, f_vars = stages.frozen_f(ctx, siamese=False)
    g_model, g_state, _ = stages.g_setup(ctx, abstract=True)
    map_fn = inference.compile_weight_maps(g_model, ctx.crop, cfg.eval)
    gt_boxes = center_crop_boxes(split.boxes, split.size, ctx.crop)
    gt_masks = None if split.masks is None else center_crop_masks(split.masks, ctx.crop)

    classify = inference.compile_f_outputs(f_model, ctx.crop)
    logits = [parallel.to_host(out)[:len(v)]
              for (out,), v in map_split(lambda b: classify(f_vars, b['image']), split, cfg.eval.batch_size, ctx.mesh)]
    predicted = np.argmax(np.concatenate(logits), axis=-1)

    cam = inference.compile_cam_maps(f_model, ctx.crop)
    variants = {'cam': lambda b: cam(f_vars, b['image'], b['label'])}
    for name, epoch in (('weight_map_selected', selection['selected_epoch']),
                        ('weight_map_last', selection['last_epoch'])):
        g_vars = stages.restore_g(ctx, g_state, epoch)
        variants[name] = functools.partial(lambda v, b: map_fn(v, b['image']), g_vars)

    n = min(cfg.eval.num_overlays, len(split))
    results, sample_maps, sample_boxes = {}, {}, {}
    for name in ('weight_map_selected', 'weight_map_last', 'cam'):
        results[name], sample_maps[name], sample_boxes[name] = _score_variant(
            ctx, name, variants[name], split, gt_boxes, gt_masks, predicted, n)
    return results, Samples(np.arange(n), sample_maps, sample_boxes, gt_boxes[:n])
