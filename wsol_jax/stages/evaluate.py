"""Stage evaluate: the selected point of `g`, its last one and the CAM baseline on the test split;
then the report (`wsol_jax.report`: results.json, results.md and the figures).

For each: boxes from the paper's rule (Eq. 5 + largest contour, under `eval.box_rule`, the same
rule that scored the points for the selection), GT-known loc, Top-1 loc (with the classifier
`f`), Top-1 cls; and, after wsolevaluation's per-map min-max normalisation, PxAP (where masks
exist) and MaxBoxAcc (v1 and V2). What f cannot give is left out, never approximated
(`methods.not_defined`): Top-1/Top-k cls and loc without a classifier f (an encoder from
`f.pretrained`), the CAM row for an f without a class head on averaged features (a ViT); the
weight map's GT-known loc, MaxBoxAcc and PxAP need no class and are always there. Everything
streams over the test set; the contours of MaxBoxAcc run in worker processes while the device
computes the next batch. The ground truth
is scaled once from the original image's pixels to what each protocol evaluates (the paper's
resize and centre crop here; wsolevaluation's whole image at 224 with `eval.save_maps`,
`wsol_jax.wsolevaluation`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import multiprocessing
import os
from typing import Optional

import jax
import numpy as np

from wsol_jax import boxes as boxes_lib, inference, methods, metrics, parallel, report as report_lib
from wsol_jax import workdir as workdir_lib, wsolevaluation
from wsol_jax.context import Context, frozen_f, g_setup, restore_g
from wsol_jax.data.dataset import crop_protocol_boxes, crop_protocol_masks, resize_masks
from wsol_jax.data.pipeline import map_split
from wsol_jax.errors import DataError
from wsol_jax.stages.select import check_selected_maps, load_selection


@dataclasses.dataclass
class Samples:
    """What the report draws for the first few test images."""

    indices: np.ndarray
    maps: dict[str, np.ndarray]
    boxes: dict[str, np.ndarray]
    gt_boxes: np.ndarray


def contour_executor(num_workers: int):
    """Worker processes for MaxBoxAcc's contours (`eval.num_workers`; 0: one per core), or None
    to run them in-line. Spawned, not forked: the parent holds JAX's threads."""
    n = num_workers or len(os.sched_getaffinity(0))
    if n <= 1:
        return None
    return concurrent.futures.ProcessPoolExecutor(n, mp_context=multiprocessing.get_context('spawn'))


def _class_counts(box_ok: np.ndarray, logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """`(4,)` counts over a batch: box and top-1 right, top-1 right, box and top-k right, top-k
    right (`box_ok`, `labels` `(n,)`; `logits` `(n, C)`)."""
    top1, top_k = metrics.top_k_correct(logits, labels, 1), metrics.top_k_correct(logits, labels, k)
    return np.array([(box_ok & top1).sum(), top1.sum(), (box_ok & top_k).sum(), top_k.sum()])


def _score_variant(ctx, name, fn, split, gt_boxes, logits, n_samples, executor):
    """`fn(batch) -> maps` or `(maps, M_hat)`: the metrics of one kind of map over the test split;
    `logits` `(N, C)` of the classifier f, or None without one (no Top-1/Top-k keys then).

    Each host scores the rows it fed (its shard of every batch); the accumulators (counts,
    histograms) are summed over hosts at the end, so evaluation time falls with the host count.
    Returns the metrics and the maps and boxes of this host's first `n_samples` images."""
    cfg = ctx.config
    pxap_acc = metrics.PxAPAccumulator(cfg.eval.pxap_interval)
    maxbox_acc = metrics.MaxBoxAccAccumulator(cfg.eval.pxap_interval, tuple(cfg.eval.maxboxacc_ious), executor)
    k = cfg.eval.top_k
    counts = np.zeros(5)  # box right, then `_class_counts` (left at 0 without a classifier)
    samples = {'index': [], 'maps': [], 'boxes': []}
    for out, valid in map_split(fn, split, cfg.eval.batch_size, ctx.mesh, cfg.data.read_threads):
        rows = parallel.local_valid(valid, cfg.eval.batch_size)
        maps = parallel.local_rows(out[0])[: len(rows)]
        if len(out) == 2:  # g: M_hat was computed on the device with the box rule
            boxes = boxes_lib.boxes_from_thresholded(parallel.local_rows(out[1])[: len(rows)], cfg.eval.box_rule)
        else:
            boxes = boxes_lib.boxes_from_maps(maps, cfg.eval.threshold_ratio, cfg.eval.box_rule)
        box_ok = metrics.best_iou(boxes, gt_boxes[rows]) >= 0.5
        counts[0] += box_ok.sum()
        if logits is not None:
            counts[1:] += _class_counts(box_ok, logits[rows], split.labels[rows], k)
        normalized = boxes_lib.normalize_maps(maps)
        if split.masks is not None:  # read per batch: the masks stay on disk
            pxap_acc.update(normalized, crop_protocol_masks(split.mask_rows(rows), split.size, ctx.crop))
        maxbox_acc.update(normalized, gt_boxes[rows])  # returns at once with an executor
        if sum(map(len, samples['index'])) < n_samples:
            for key, value in (('index', rows), ('maps', maps), ('boxes', boxes)):
                samples[key].append(value)
    counts = parallel.sum_over_processes(counts) / len(split)
    maxbox_acc.merge_over_processes(parallel.sum_over_processes)
    result = {'gt_known_loc': float(counts[0])}
    if logits is not None:
        result.update(
            {
                'top1_loc': float(counts[1]),
                'top1_cls': float(counts[2]),
                f'top{k}_loc': float(counts[3]),
                f'top{k}_cls': float(counts[4]),
            }
        )
    result.update(maxbox_acc.result())
    if split.masks is not None:
        pxap_acc.merge_over_processes(parallel.sum_over_processes)
        result['pxap'] = pxap_acc.result()
    print(f'[evaluate] {name}: ' + ' '.join(f'{k}={v:.4f}' for k, v in result.items()))
    return result, {key: np.concatenate(v)[:n_samples] for key, v in samples.items()}


def save_and_score_maps(ctx, g_model, g_vars, executor) -> dict:
    """`eval.save_maps`: the selected g's maps of the whole test images under wsolevaluation's
    protocol (resize, no crop, 224x224, min-max normalised) written as
    `<workdir>/scoremaps/<image_id>.npy`, with the metadata and masks its evaluation.py reads
    (`wsolevaluation.py`), and scored here from the same arrays against the same ground truth,
    taken from the original pixels as theirs (MaxBoxAcc v1/v2 at IoU 30/50/70, PxAP where masks
    exist). Nothing is written outside the workdir. (g's input is the cached image resized to the
    crop size, i.e. resized twice from the original; their loader resizes the original once.)"""
    cfg, split = ctx.config, ctx.data.test
    ids = wsolevaluation.image_ids(split)  # checked before anything is written
    root, mask_root = ctx.path(workdir_lib.SCOREMAPS), ctx.path(workdir_lib.WSOLEVAL_MASKS)
    metadata_root = ctx.path(workdir_lib.WSOLEVAL_METADATA)
    fn = jax.jit(lambda v, x: g_model.apply(v, inference.whole_image(x, ctx.crop), train=False))
    boxes = wsolevaluation.resize_boxes(split.boxes, split.original_sizes)
    maxbox = metrics.MaxBoxAccAccumulator(cfg.eval.pxap_interval, tuple(cfg.eval.maxboxacc_ious), executor)
    pxap = metrics.PxAPAccumulator(cfg.eval.pxap_interval)
    for (out,), valid in map_split(
        lambda b: fn(g_vars, b['image']), split, cfg.eval.batch_size, ctx.mesh, cfg.data.read_threads
    ):
        rows = parallel.local_valid(valid, cfg.eval.batch_size)  # each host writes and scores its rows
        maps = wsolevaluation.normalized_maps(parallel.local_rows(out)[: len(rows)])
        wsolevaluation.write_scoremaps(root, [ids[i] for i in rows], maps)
        maxbox.update(maps, boxes[rows])
        if split.masks is not None:
            originals = split.mask_rows(rows)
            wsolevaluation.write_masks(mask_root, [ids[i] for i in rows], originals)
            pxap.update(maps, resize_masks(originals, wsolevaluation.SIZE))
    datasets = wsolevaluation.metadata_lines(split, ids)
    if parallel.is_chief():
        wsolevaluation.write_metadata(metadata_root, datasets)
    maxbox.merge_over_processes(parallel.sum_over_processes)
    result = maxbox.result()
    if split.masks is not None:
        pxap.merge_over_processes(parallel.sum_over_processes)
        result['pxap'] = pxap.result()
    print(f'[evaluate] scoremaps: {len(split)} maps in {root}; ' + ' '.join(f'{k}={v:.4f}' for k, v in result.items()))
    if wsolevaluation.BOX_DATASET not in datasets and split.boxes is not None:
        print(
            '[evaluate] no box metadata for wsolevaluation: some test images have no box (its BoxEvaluator '
            'needs one per image)'
        )
    for metric, command in wsolevaluation.evaluator_commands(
        root, metadata_root, mask_root, datasets, cfg.eval.pxap_interval, cfg.eval.maxboxacc_ious
    ).items():
        print(f'[evaluate] {metric} by wsolevaluation\'s own evaluator (in its clone): {command}')
    return result


def _classifier_variants(ctx: Context) -> tuple[Optional[np.ndarray], dict]:
    """`(logits (N, C) of the classifier f on the test split, {'cam': batch -> maps})`, each only
    where `methods.not_defined` does not rule it out: `(None, {})` without a classifier f."""
    cfg, split, absent = ctx.config, ctx.data.test, methods.not_defined(ctx.config)
    if 'top_k' in absent:
        return None, {}
    f_model, f_vars = frozen_f(ctx, workdir_lib.F_CLASSIFIER)
    classify = inference.compile_f_outputs(f_model, ctx.crop)
    logits = np.concatenate(
        [
            parallel.to_host(out)[: len(v)]
            for (out,), v in map_split(
                lambda b: classify(f_vars, b['image']), split, cfg.eval.batch_size, ctx.mesh, cfg.data.read_threads
            )
        ]
    )
    if 'cam' in absent:
        return logits, {}
    cam = inference.compile_cam_maps(f_model, ctx.crop)
    return logits, {'cam': lambda b: cam(f_vars, b['image'], b['label'])}


def run(ctx: Context) -> tuple[dict, Samples]:
    """Returns `({variant: metrics}, samples for the overlays)`; variants are
    `weight_map_selected`, `weight_map_last` and, where f defines it, `cam` (and, with
    `eval.save_maps`, `weight_map_selected_wsolevaluation`: the whole-image protocol of the saved
    scoremaps). Without a classifier f the metrics have no Top-1/Top-k keys
    (`methods.not_defined` names what is left out and why)."""
    cfg, split = ctx.config, ctx.data.test
    if split.boxes is None:
        raise DataError(
            'the test split has no boxes (e.g. TFDS oxford_flowers102): localization cannot be '
            'evaluated; use a source with boxes or masks'
        )
    selection = load_selection(ctx.workdir)
    g_model, g_state, _ = g_setup(ctx, abstract=True)
    map_fn = inference.compile_weight_maps(g_model, ctx.crop, cfg.eval)
    gt_boxes = crop_protocol_boxes(split, slice(None), ctx.crop)
    logits, variants = _classifier_variants(ctx)
    for what, reason in methods.not_defined(cfg).items():
        print(f'[evaluate] {methods.NOT_DEFINED_NAMES[what]}: not defined, {reason}')
    g_vars = {}
    for name, step in (
        ('weight_map_selected', selection['selected_step']),
        ('weight_map_last', selection['last_step']),
    ):
        g_vars[name] = restore_g(ctx, g_state, step)
        variants[name] = functools.partial(lambda v, b: map_fn(v, b['image']), g_vars[name])

    n = min(cfg.eval.num_overlays, len(split))
    results, sample_maps, sample_boxes = {}, {}, {}
    executor = contour_executor(cfg.eval.num_workers)
    try:
        for name in ('weight_map_selected', 'weight_map_last', 'cam'):
            if name not in variants:
                continue
            results[name], samples = _score_variant(ctx, name, variants[name], split, gt_boxes, logits, n, executor)
            sample_maps[name], sample_boxes[name], indices = samples['maps'], samples['boxes'], samples['index']
        if cfg.eval.save_maps:
            results['weight_map_selected_wsolevaluation'] = save_and_score_maps(
                ctx, g_model, g_vars['weight_map_selected'], executor
            )
    finally:
        if executor is not None:
            executor.shutdown()
    return results, Samples(indices, sample_maps, sample_boxes, gt_boxes[indices])


def report(ctx: Context, output: tuple[dict, Samples], timings: dict) -> dict:
    """After the stage's wall time is recorded (the report lists it): results.json, results.md and
    the figures, written by process 0 and printed; then the stop when the selected point's maps do
    not localise (`check_selected_maps`), after the report, so that what went wrong can be looked
    at. Returns the results."""
    results, samples = output
    if parallel.is_chief():
        report_lib.write(ctx.workdir, ctx.config, results, load_selection(ctx.workdir), samples, ctx.data, timings)
        print(f'[report] {ctx.path("results.md")}\n' + open(ctx.path('results.md')).read())
    check_selected_maps(load_selection(ctx.workdir), ctx.config.eval.max_bad_maps)
    return results
