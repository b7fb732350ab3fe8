"""Stage train_g: `g` with `f` frozen (Eq. 1, or Eq. 3 + 4, plus lambda L1), scored by S.

Which f sits in g's objective, and the objective, are read from `wsol_jax.methods.g_target`.
Every `g.eval_every_steps` steps (by default once an epoch) the point is scored on the
validation split by mean S (Eq. 6), the selection's criterion (`wsol_jax.evaluators.validation`);
the history of these scores is what the select stage reads. `fit_g` is the same training for an f given as a function
(`wsol_jax.fit.fit_weight_map`).
"""

from __future__ import annotations

import functools
import os

import numpy as np

from wsol_jax import inference, methods, parallel
from wsol_jax import workdir as workdir_lib
from wsol_jax.context import Context, frozen_f, g_setup
from wsol_jax.data.dataset import Augment
from wsol_jax.errors import TrainingError, WorkdirError
from wsol_jax.evaluators import validation
from wsol_jax.evaluators.common import Bench
from wsol_jax.train import budgets, checkpoint, loop, start, steps
from wsol_jax.train.state import TrainState


def run(ctx: Context) -> None:
    """`g` with `f` frozen (the f of `methods.g_target`), once that f is good enough
    (`check_f_quality`); see `fit_g`."""
    target = methods.g_target(ctx.config)
    check_f_quality(ctx, (target.f_network,))
    f_model, f_vars = frozen_f(ctx, target.f_network)
    fit_g(ctx, steps.frozen_apply(f_model, target.f_output), f_vars, target.objective)


def check_f_quality(ctx: Context, names: tuple[str, ...]) -> None:
    """Stop before training g on an f that is near chance (train_f recorded its validation
    accuracy in f_quality.json): g is only as good as its f. Where the data has one class there
    are no labels to measure f by (every answer is right): no stop."""
    cfg = ctx.config
    quality = workdir_lib.read_json(ctx.path(workdir_lib.F_QUALITY), {})
    for name in names:
        entry = quality.get(name)
        if entry is None:
            raise WorkdirError(
                f'no checkpoint of f ({name}) finished in {ctx.workdir} ({workdir_lib.F_QUALITY} has no '
                'entry for it); run the stage that trains it first: --stage=train_f'
            )
        if entry['chance'] >= 1.0:
            print(f'[g] the quality of {name} is not measured: the data has one class, no labels to measure it by')
            continue
        floor = cfg.f.min_accuracy_over_chance * entry['chance']
        if entry['val_accuracy'] < floor and not cfg.f.allow_weak:
            raise TrainingError(
                f'{name} reaches {entry["val_accuracy"]:.3f} validation accuracy, below {floor:.3f} '
                f'({cfg.f.min_accuracy_over_chance:g}x chance {entry["chance"]:.3f}): g trained on it would localise '
                'nothing. Train f better (ImageNet weights f.pretrained, e.g. '
                f'configs/custom.py:{cfg.method},small,pretrained; '
                'more data, more f.patience or f.max_epochs, another f.optimizer.learning_rate) with '
                '--config.overwrite=True, or continue with '
                f'--config.f.allow_weak=True'
            )


def fit_g(ctx: Context, f_apply, f_vars, objective) -> loop.History:
    """Train g against the frozen `f_apply(f_vars, normalised images)` with `objective` (a
    `steps.*_objective`); every `g.eval_every_steps` steps (by default once an epoch) the mean S on
    the validation split, the history, and the checkpoints of the selected and the latest point;
    with `g.patience` it stops once mean S has not come back within the selection's tolerance of
    its best for that many scores. Returns the history of scored points."""
    cfg, method = ctx.config, ctx.method
    g_model, state, n_steps = g_setup(ctx, initial_weight=initial_weight(ctx, f_apply, f_vars, objective))
    # g's crops and flips are the paper's; f's scale and colour jitter are for f's training only
    augment = Augment(ctx.crop, flip=cfg.data.flip)
    fn = functools.partial(steps.g_step, f_apply, g_model, cfg.g, augment, objective)
    compiled = steps.compile_step(fn, ctx.mesh, n_frozen=1)
    step = lambda s, batch, rng: compiled(s, f_vars, batch, rng)
    batches = functools.partial(
        method.batches, ctx.data.train, cfg.g.batch_size, ctx.mesh, threads=cfg.data.read_threads
    )
    map_fn = inference.compile_weight_maps(g_model, ctx.crop, cfg.eval)
    spec = budgets.g_loop(
        cfg,
        ctx.workdir,
        n_steps,
        cfg.g.batch_size * method.images_per_example,
        ctx.writer,
        budgets.lr_hint(cfg, 'g'),
    )
    if parallel.is_chief():
        workdir_lib.record(ctx.workdir, cfg, workdir_lib.G)
        os.makedirs(ctx.path(workdir_lib.STRIP), exist_ok=True)
        latest = checkpoint.latest_step(spec.directory) or 0
        if not loop.finished(spec, loop.read_history(spec.history_path, latest), latest):
            workdir_lib.remove_derived(ctx.workdir)  # a selection of fewer points is stale now

    validation_row = validation.Evaluator(validation.NAME)

    def score(step: int, s: TrainState) -> dict:
        bench = Bench(ctx, ctx.data.val, lambda point: s.variables, g_model, map_fn)
        (row,) = validation_row.run(bench)
        scores, strip = row.metrics, row.samples['maps']
        if parallel.is_chief():
            np.save(ctx.path(workdir_lib.STRIP, f'step_{step:07d}.npy'), (strip * 255).round().astype(np.uint8))
        if scores['val/collapsed'] >= 0.9:
            print(
                f'[g] warning: step {step}: the weight map collapsed (weights all below 0.1 or all above 0.9) '
                f'on {100 * scores["val/collapsed"]:.0f}% of the validation images'
            )
        return scores

    return loop.run(spec, state, step, batches, ctx.key('g'), score)[1]


def initial_weight(ctx: Context, f_apply, f_vars, objective) -> float:
    """The untrained map's value for this f (`wsol_jax.train.start`), printed with what f did at
    each value tried. With `g.start_agreement` 0: `g.initial_weight`."""
    cfg = ctx.config
    weight, measured = start.start_weight(
        functools.partial(f_apply, f_vars),
        ctx.data.train.images,
        ctx.crop,
        cfg.g.initial_weight,
        cfg.g.start_agreement,
        embedding=objective is not steps.method1_objective,
        mask_space=cfg.g.mask_space,
        batch_size=cfg.eval.batch_size,
    )
    if measured:
        tried = ', '.join(f'{a:.2f} at {w:g}' for w, a in measured.items())
        print(
            f'[g] the untrained map is {weight:g}: f answers on the dimmed training images as on the images '
            f'for a share of {tried} (g.start_agreement={cfg.g.start_agreement:g})'
        )
    return weight
