"""Stage evaluate: each evaluator of the run on the test split, then the report.

The evaluators (`wsol_jax.evaluators`: by default the selected point of `g`, its last point and
the CAM baseline; with `eval.save_maps` also g's maps under wsolevaluation's protocol) each yield
rows of metrics; what this run's f cannot give is left out, never approximated
(`methods.not_defined`): Top-1/Top-k cls and loc without a classifier f (an encoder from
`f.pretrained`), the CAM row for an f without a class head on averaged features (a ViT). The
ground truth is scaled once from the original image's pixels to what each protocol evaluates (the
paper's resize and centre crop; wsolevaluation's whole image at 224). The report
(`wsol_jax.report`: results.json, results.md and the figures) follows once the stage's wall time
is recorded.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from wsol_jax import evaluators, inference, methods, parallel, report as report_lib
from wsol_jax.context import Context, g_setup, restore_g
from wsol_jax.evaluators.common import Bench, contour_executor
from wsol_jax.selection import load_selection
from wsol_jax.stages.select import check_selected_maps


@dataclasses.dataclass
class Samples:
    """What the report draws for the first few test images: their `indices` `(n,)`, and for each
    row that keeps samples, its `maps` `(n, c, c)` and `boxes` `(n, 4)`; `gt_boxes` `(n, K, 4)`."""

    indices: np.ndarray
    maps: dict[str, np.ndarray]
    boxes: dict[str, np.ndarray]
    gt_boxes: np.ndarray


def run(ctx: Context) -> tuple[dict, Samples]:
    """Returns `({row: metrics}, samples for the overlays)`; the rows are those of
    `evaluators.names` (by default `weight_map_selected`, `weight_map_last` and, where f defines
    it, `cam`; with `eval.save_maps` also `weight_map_selected_wsolevaluation`). Without a
    classifier f the metrics have no Top-1/Top-k keys (`methods.not_defined` names what is left
    out and why)."""
    cfg, split = ctx.config, ctx.data.test  # with boxes: checked at start-up (checks.check_run)
    selection = load_selection(ctx.workdir)
    g_model, g_state, _ = g_setup(ctx, abstract=True)
    steps = {'selected': selection['selected_step'], 'last': selection['last_step']}
    absent = methods.not_defined(cfg)
    for what, reason in absent.items():
        print(f'[evaluate] {methods.NOT_DEFINED_NAMES[what]}: not defined, {reason}')
    results, maps, boxes, indices = {}, {}, {}, None
    executor = contour_executor(cfg.eval.num_workers)
    try:
        bench = Bench(
            ctx,
            split,
            functools.cache(lambda point: restore_g(ctx, g_state, steps[point])),
            g_model,
            inference.compile_weight_maps(g_model, ctx.crop, cfg.eval),
            executor,
            n_samples=min(cfg.eval.num_overlays, len(split)),
        )
        for evaluator in evaluators.from_config(cfg, absent):
            for row in evaluator.run(bench):
                results[row.name] = row.metrics
                if row.samples is not None:
                    maps[row.name], boxes[row.name], indices = (row.samples[k] for k in ('maps', 'boxes', 'index'))
    finally:
        if executor is not None:
            executor.shutdown()
    return results, Samples(indices, maps, boxes, bench.gt_boxes[indices])


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
