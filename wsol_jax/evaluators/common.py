"""What the evaluators share: the rows they yield, what they evaluate (`Bench`), and the metrics
of one kind of map on the test split under the paper's crop protocol (`score_maps`).

`score_maps` finds boxes by the paper's rule (Eq. 5 + largest contour, under `eval.box_rule`, the
rule that scored the points for the selection) and computes GT-known loc, Top-1/Top-k loc and
cls (with the classifier f), and, after wsolevaluation's per-map min-max normalisation, PxAP
(where masks exist) and MaxBoxAcc (v1 and V2). What f cannot give is left out, never
approximated (`methods.not_defined`). Everything streams over the split; the contours of
MaxBoxAcc run in worker processes while the device computes the next batch.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import multiprocessing
import os
from typing import Callable, Iterator, Optional

import numpy as np

from wsol_jax import boxes as boxes_lib, inference, methods, metrics, parallel
from wsol_jax import workdir as workdir_lib
from wsol_jax.context import Context, frozen_f
from wsol_jax.data.dataset import Split, crop_protocol_boxes, crop_protocol_masks
from wsol_jax.data.pipeline import map_split


@dataclasses.dataclass
class Row:
    """One row of results: `name` (its key in results.json, g_history.json's point for the
    validation row), `metrics` (`{metric: fraction}`), and for the figures the maps and boxes of
    the first images: `samples` `{'index': (n,), 'maps': (n, c, c), 'boxes': (n, 4)}` (validation:
    only `'maps'`), None where there is nothing to draw."""

    name: str
    metrics: dict[str, float]
    samples: Optional[dict[str, np.ndarray]] = None


class Evaluator:
    """Scores one kind of map; `run(bench)` yields its rows (one, named after it, so far)."""

    def __init__(self, name: str):
        self.name = name

    def run(self, bench: Bench) -> Iterator[Row]:
        raise NotImplementedError


@dataclasses.dataclass
class Bench:
    """What the evaluators evaluate: `split` of the run's data and the trained networks. `g_at`
    maps a point of g (`'selected'`, `'last'`; train_g: `'current'`) to its variables;
    `map_fn(g variables, uint8 images) -> (M, M_hat)` is compiled once for all of them. f, its
    logits and the ground-truth boxes are computed once, when an evaluator first asks."""

    ctx: Context
    split: Split
    g_at: Callable[[str], dict]
    g_model: object
    map_fn: Callable
    executor: Optional[concurrent.futures.Executor] = None  # MaxBoxAcc's contour workers (None: in-line)
    n_samples: int = 0  # images whose maps and boxes a row keeps for the figures

    @functools.cached_property
    def gt_boxes(self) -> np.ndarray:
        """`(N, K, 4)` ground-truth boxes of the split under the crop protocol."""
        return crop_protocol_boxes(self.split, slice(None), self.ctx.crop)

    @functools.cached_property
    def classifier(self) -> tuple[object, dict]:
        """`(f, its variables)`: the kept classifier f."""
        return frozen_f(self.ctx, workdir_lib.F_CLASSIFIER)

    @functools.cached_property
    def logits(self) -> Optional[np.ndarray]:
        """`(N, C)` logits of the classifier f on the split; None without one (`methods.not_defined`)."""
        cfg = self.ctx.config
        if 'top_k' in methods.not_defined(cfg):
            return None
        f_model, f_vars = self.classifier
        classify = inference.compile_f_outputs(f_model, self.ctx.crop)
        return np.concatenate(
            [
                parallel.to_host(out)[: len(v)]
                for (out,), v in map_split(
                    lambda b: classify(f_vars, b['image']),
                    self.split,
                    cfg.eval.batch_size,
                    self.ctx.mesh,
                    cfg.data.read_threads,
                )
            ]
        )


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


def score_maps(bench: Bench, name: str, fn: Callable) -> Row:
    """`fn(batch) -> maps` or `(maps, M_hat)`: the row of one kind of map over `bench.split`,
    with the maps and boxes of this host's first `bench.n_samples` images; the Top-1/Top-k keys
    only where f classifies (`bench.logits`).

    Each host scores the rows it fed (its shard of every batch); the accumulators (counts,
    histograms) are summed over hosts at the end, so evaluation time falls with the host count."""
    cfg, split, n_samples = bench.ctx.config, bench.split, bench.n_samples
    gt_boxes, logits = bench.gt_boxes, bench.logits
    pxap_acc = metrics.PxAPAccumulator(cfg.eval.pxap_interval)
    maxbox_acc = metrics.MaxBoxAccAccumulator(cfg.eval.pxap_interval, tuple(cfg.eval.maxboxacc_ious), bench.executor)
    k = cfg.eval.top_k
    counts = np.zeros(5)  # box right, then `_class_counts` (left at 0 without a classifier)
    samples = {'index': [], 'maps': [], 'boxes': []}
    for out, valid in map_split(fn, split, cfg.eval.batch_size, bench.ctx.mesh, cfg.data.read_threads):
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
            pxap_acc.update(normalized, crop_protocol_masks(split.mask_rows(rows), split.size, bench.ctx.crop))
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
    return Row(name, result, {key: np.concatenate(v)[:n_samples] for key, v in samples.items()})
