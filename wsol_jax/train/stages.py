"""The training stages of the method: pre-train `f`, then train `g` with `f` frozen.

Where things go in the workdir is named in `wsol_jax.workdir`; what differs between the methods
is read from `wsol_jax.methods`. Each stage records its config fingerprint before its first
checkpoint, so that a rerun resumes only what it can continue.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from wsol_jax import boxes as boxes_lib, inference, methods, metrics, parallel
from wsol_jax import workdir as workdir_lib
from wsol_jax.context import Context, f_setup, frozen_f, g_setup
from wsol_jax.data.dataset import Split, crop_protocol_boxes
from wsol_jax.data.pipeline import map_split
from wsol_jax.errors import TrainingError, WorkdirError
from wsol_jax.train import budgets, checkpoint, loop, steps
from wsol_jax.train.state import TrainState

F_CLASSIFIER, G_DIR = workdir_lib.F_CLASSIFIER, workdir_lib.G


def _lr_hint(net: str, ctx: Context) -> str:
    lr = ctx.config[net].optimizer.learning_rate
    return (
        f'Lower config.{net}.optimizer.learning_rate (now {lr}, e.g. to {lr / 10:g}) and run again with '
        f'--config.overwrite=True' + (' (or use dtype=float32)' if ctx.config.dtype != 'float32' else '')
    )


def train_f(ctx: Context) -> None:
    """Stage train_f: each f network of the method (the classifier with cross-entropy and, for
    Method II, the Siamese embedding with the triplet loss of Eq. 2), scored on the validation
    split as it trains (`train.budgets`: its most accurate point is kept, and with `f.patience` it
    stops when it no longer improves). They are frozen afterwards; the kept accuracy is recorded."""
    cfg = ctx.config
    for name in methods.f_networks(cfg):
        if name == workdir_lib.F_ENCODER:
            import_encoder(ctx)
            continue
        network = methods.F_NETWORKS[name]
        model, state, n_steps = f_setup(ctx, name)
        fn = network.step(model, ctx.crop, cfg.f, cfg.g)
        batches = functools.partial(
            network.batches, ctx.data.train, cfg.f.batch_size, ctx.mesh, threads=cfg.data.read_threads
        )
        if parallel.is_chief():
            workdir_lib.record(ctx.workdir, cfg, name)
        spec = budgets.f_loop(
            cfg,
            ctx.workdir,
            name,
            n_steps,
            network.images_per_example * cfg.f.batch_size,
            ctx.writer,
            _lr_hint('f', ctx),
        )
        accuracy = f_accuracy_fn(ctx, name, model)
        _, history = loop.run(
            spec,
            state,
            steps.compile_step(fn, ctx.mesh),
            batches,
            ctx.key(name),
            lambda step, s: {budgets.F_SCORE: accuracy(s.variables)},
        )
        _record_f_quality(ctx, name, spec, history)


def import_encoder(ctx: Context) -> None:
    """`f.train=False`: f is the encoder in `f.pretrained`, used as it is. It is checked, saved as
    the stage's one checkpoint (step 0, so that every later stage restores f the same way) and its
    features measured by the nearest class mean where the validation split has labels."""
    name, cfg = workdir_lib.F_ENCODER, ctx.config
    model, state, n_steps = f_setup(ctx, name)
    spec = budgets.f_loop(cfg, ctx.workdir, name, n_steps)
    if 0 not in checkpoint.saved_steps(spec.directory):
        if parallel.is_chief():
            workdir_lib.record(ctx.workdir, cfg, name)
        history = {0: {'epoch': 0.0, budgets.F_SCORE: f_accuracy_fn(ctx, name, model)(state.variables)}}
        mgr = checkpoint.manager(spec.directory)
        if parallel.is_chief():
            loop.write_history(spec.history_path, history)
        checkpoint.save(mgr, 0, state, {'step': 0, 'epoch': 0.0, 'metrics': history[0]})
        mgr.wait_until_finished()
        print(f'[{name}] {cfg.f.arch} from {cfg.f.pretrained}, used as an encoder (not trained)')
    history = loop.read_history(spec.history_path, 0)
    kept = history[0]
    entry = {
        'val_accuracy': kept[budgets.F_SCORE],
        'chance': 1.0 / ctx.data.num_classes,
        'measure': methods.F_NETWORKS[name].measure,
        'kept_step': 0,
        'kept_epoch': 0.0,
        'last_step': 0,
        'last_epoch': 0.0,
        'stopped': 'imported',
    }
    _write_f_quality(ctx, name, entry)


def _outputs(ctx: Context, fn, split: Split) -> np.ndarray:
    """`fn(images)` over a split, `(N, ...)` numpy, in order."""
    batch = ctx.config.eval.batch_size
    return np.concatenate(
        [
            parallel.to_host(out)[: len(valid)]
            for (out,), valid in map_split(
                lambda b: fn(b['image']), split, batch, ctx.mesh, ctx.config.data.read_threads
            )
        ]
    )


def f_accuracy_fn(ctx: Context, name: str, model):
    """`variables -> validation accuracy` of the f network `name`, compiled once: Top-1 of the
    classifier; for the Siamese embedding, the nearest class mean (class means of the training
    embeddings, Euclidean as in Eq. 2)."""
    fn = inference.compile_f_outputs(model, ctx.crop)
    val, train = ctx.data.val, ctx.data.train

    def accuracy(variables) -> float:
        out = _outputs(ctx, functools.partial(fn, variables), val)
        if not methods.F_NETWORKS[name].embedding:
            return float(np.mean(np.argmax(out, -1) == val.labels))
        embedded = _outputs(ctx, functools.partial(fn, variables), train)
        classes = np.unique(train.labels)
        means = np.stack([embedded[train.labels == c].mean(0) for c in classes])
        nearest = classes[np.argmin(((out[:, None] - means[None]) ** 2).sum(-1), axis=1)]
        return float(np.mean(nearest == val.labels))

    return accuracy


def _record_f_quality(ctx: Context, name: str, spec: loop.Loop, history: loop.History) -> dict:
    """f_quality.json: the validation accuracy of the kept point of `name`, where it stopped."""
    kept = loop.kept_point(spec, history)
    last = max(history)
    entry = {
        'val_accuracy': history[kept][budgets.F_SCORE],
        'chance': 1.0 / ctx.data.num_classes,
        'measure': methods.F_NETWORKS[name].measure,
        'kept_step': kept,
        'kept_epoch': kept / spec.steps_per_epoch,
        'last_step': last,
        'last_epoch': last / spec.steps_per_epoch,
        'stopped': loop.finished(spec, history, last),
    }
    return _write_f_quality(ctx, name, entry)


def _write_f_quality(ctx: Context, name: str, entry: dict) -> dict:
    if parallel.is_chief():
        quality = workdir_lib.read_json(ctx.path(workdir_lib.F_QUALITY), {})
        quality[name] = entry
        workdir_lib.write_json(ctx.path(workdir_lib.F_QUALITY), quality)
    parallel.barrier('f_quality')
    print(
        f'[{name}] validation accuracy {entry["val_accuracy"]:.3f} ({entry["measure"]}; chance {entry["chance"]:.3f}) '
        f'at epoch {entry["kept_epoch"]:.2f}, stopped at epoch {entry["last_epoch"]:.2f} ({entry["stopped"]})'
    )
    return entry


def check_f_quality(ctx: Context, names: tuple[str, ...]) -> None:
    """Stop before training g on an f that is near chance: g is only as good as its f. Where the
    data has one class there are no labels to measure f by (every answer is right): no stop."""
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
                f'nothing. Train f better (ImageNet weights f.pretrained, more data, more f.patience or '
                f'f.max_epochs, another f.optimizer.learning_rate) with --config.overwrite=True, or continue with '
                f'--config.f.allow_weak=True'
            )


def validation_scores(ctx: Context, map_fn, g_vars) -> tuple[dict, np.ndarray]:
    """Mean S (Eq. 6) over the validation split and its standard error, the selection criterion
    (no box used), with the share of degenerate and collapsed maps; and, only as a diagnostic,
    GT-known loc on the validation boxes when there are any. Returns the metrics and the maps of the first
    `eval.strip_images` validation images."""
    split, cfg = ctx.data.val, ctx.config
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
    return out, np.concatenate(strip)[: cfg.eval.strip_images]


def train_g(ctx: Context) -> None:
    """Stage train_g: `g` with `f` frozen (the f of `methods.g_target`); see `fit_g`."""
    target = methods.g_target(ctx.config)
    check_f_quality(ctx, (target.f_network,))
    f_model, f_vars = frozen_f(ctx, target.f_network)
    fit_g(ctx, steps.frozen_apply(f_model, target.f_output), f_vars, target.objective)


def fit_g(ctx: Context, f_apply, f_vars, objective) -> loop.History:
    """Train g against the frozen `f_apply(f_vars, normalised images)` with `objective` (a
    `steps.*_objective`); every `g.eval_every_steps` steps (by default once an epoch) the mean S on
    the validation split, the history, and the checkpoints of the selected and the latest point;
    with `g.patience` it stops once mean S has not come back within the selection's tolerance of
    its best for that many scores. Returns the history of scored points."""
    cfg, method = ctx.config, ctx.method
    g_model, state, n_steps = g_setup(ctx)
    fn = functools.partial(steps.g_step, f_apply, g_model, cfg.g, ctx.crop, objective)
    compiled = steps.compile_step(fn, ctx.mesh, n_frozen=1)
    step = lambda s, batch, rng: compiled(s, f_vars, batch, rng)
    batches = functools.partial(
        method.batches, ctx.data.train, cfg.g.batch_size, ctx.mesh, threads=cfg.data.read_threads
    )
    map_fn = inference.compile_weight_maps(g_model, ctx.crop, cfg.eval)
    spec = budgets.g_loop(
        cfg, ctx.workdir, n_steps, cfg.g.batch_size * method.images_per_example, ctx.writer, _lr_hint('g', ctx)
    )
    if parallel.is_chief():
        workdir_lib.record(ctx.workdir, cfg, G_DIR)
        os.makedirs(ctx.path(workdir_lib.STRIP), exist_ok=True)
        latest = checkpoint.latest_step(spec.directory) or 0
        if not loop.finished(spec, loop.read_history(spec.history_path, latest), latest):
            workdir_lib.remove_derived(ctx.workdir)  # a selection of fewer points is stale now

    def score(step: int, s: TrainState) -> dict:
        scores, strip = validation_scores(ctx, map_fn, s.variables)
        if parallel.is_chief():
            np.save(ctx.path(workdir_lib.STRIP, f'step_{step:07d}.npy'), (strip * 255).round().astype(np.uint8))
        if scores['val/collapsed'] >= 0.9:
            print(
                f'[g] warning: step {step}: the weight map collapsed (weights all below 0.1 or all above 0.9) '
                f'on {100 * scores["val/collapsed"]:.0f}% of the validation images'
            )
        return scores

    return loop.run(spec, state, step, batches, ctx.key('g'), score)[1]


__all__ = ['train_f', 'train_g', 'fit_g', 'check_f_quality', 'f_accuracy_fn', 'validation_scores']
