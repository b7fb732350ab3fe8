"""Row `validation`: a point of g scored on the validation split for the selection (Section 3),
what train_g records in g_history.json at every scored point.

Mean S (Eq. 6) over the validation split and its standard error, the selection criterion (no
box used), with the share of degenerate and collapsed maps; and, only as a diagnostic, GT-known
loc on the validation boxes when there are any. The row's samples are the maps of the first
`eval.strip_images` validation images (the strip of Fig. 4).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from wsol_jax import boxes as boxes_lib, inference, metrics, parallel
from wsol_jax.data.dataset import crop_protocol_boxes
from wsol_jax.data.pipeline import map_split
from wsol_jax.evaluators.common import Bench, Evaluator as Base, Row

NAME = 'validation'


class Evaluator(Base):
    """`bench`: the validation split, `bench.g_at('current')` the point being scored."""

    def run(self, bench: Bench) -> Iterator[Row]:
        ctx, split, map_fn, g_vars = bench.ctx, bench.split, bench.map_fn, bench.g_at('current')
        cfg = ctx.config
        per_image, ious, strip = [], [], []
        for (maps, maps_hat), valid in map_split(
            lambda b: map_fn(g_vars, b['image']), split, cfg.eval.batch_size, ctx.mesh, cfg.data.read_threads
        ):
            maps, maps_hat = parallel.to_host(maps)[: len(valid)], parallel.to_host(maps_hat)[: len(valid)]
            boxes = boxes_lib.boxes_from_thresholded(maps_hat, cfg.eval.box_rule)
            per_image.append(inference.map_scores(maps, maps_hat, boxes, cfg.eval.max_coverage))
            if split.boxes is not None:
                gt = crop_protocol_boxes(split, valid, ctx.crop)
                ious.append(metrics.best_iou(boxes, gt))
            if sum(map(len, strip)) < cfg.eval.strip_images:
                strip.append(maps)
        scores = {k: np.concatenate([p[k] for p in per_image]) for k in per_image[0]}
        n = len(scores['S'])
        out = {
            'mean_S': float(np.mean(scores['S'])),
            'mean_S_raw': float(np.mean(scores['S_raw'])),
            # the selection's tolerance (selection.select_step: one standard error of the best point)
            'mean_S_se': float(np.std(scores['S'], ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
            'val/degenerate': float(np.mean(scores['degenerate'])),
            'val/collapsed': float(np.mean(scores['collapsed'])),
        }
        if ious:
            out['val/gt_known_loc'] = float(np.mean(np.concatenate(ious) >= 0.5))
        yield Row(self.name, out, {'maps': np.concatenate(strip)[: cfg.eval.strip_images]})
