"""Row `weight_map_selected_wsolevaluation` (with `eval.save_maps`): the selected g's maps of the
whole test images under clovaai/wsolevaluation's protocol (resize, no crop, 224x224, min-max
normalised) written as `<workdir>/scoremaps/<image_id>.npy`, with the metadata and masks its
evaluation.py reads (`wsol_jax.wsolevaluation`), and scored here from the same arrays against the
same ground truth, taken from the original pixels as theirs (MaxBoxAcc v1/v2 at IoU 30/50/70, PxAP
where masks exist). Nothing is written outside the workdir. (g's input is the cached image
resized to the crop size, i.e. resized twice from the original; their loader resizes the
original once.)"""

from __future__ import annotations

from typing import Iterator

import jax

from wsol_jax import inference, metrics, parallel, workdir as workdir_lib, wsolevaluation
from wsol_jax.data.dataset import resize_masks
from wsol_jax.data.pipeline import map_split
from wsol_jax.evaluators.common import Bench, Evaluator as Base, Row


class Evaluator(Base):
    def run(self, bench: Bench) -> Iterator[Row]:
        ctx, cfg, split, executor = bench.ctx, bench.ctx.config, bench.split, bench.executor
        g_model, g_vars = bench.g_model, bench.g_at('selected')
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
        print(
            f'[evaluate] scoremaps: {len(split)} maps in {root}; ' + ' '.join(f'{k}={v:.4f}' for k, v in result.items())
        )
        if wsolevaluation.BOX_DATASET not in datasets and split.boxes is not None:
            print(
                '[evaluate] no box metadata for wsolevaluation: some test images have no box (its BoxEvaluator '
                'needs one per image)'
            )
        for metric, command in wsolevaluation.evaluator_commands(
            root, metadata_root, mask_root, datasets, cfg.eval.pxap_interval, cfg.eval.maxboxacc_ious
        ).items():
            print(f'[evaluate] {metric} by wsolevaluation\'s own evaluator (in its clone): {command}')
        yield Row(self.name, result)
