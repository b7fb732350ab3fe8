"""The training stages of the method: pre-train `f`, then train `g` with `f` frozen.

Where things go in the workdir is named in `wsol_jax.workdir`; what differs between the methods
is read from `wsol_jax.methods`. Each stage records its config fingerprint before its first
checkpoint, so that a rerun resumes only what it can continue.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from wsol_jax import inference, localization, methods, metrics, parallel
from wsol_jax import workdir as workdir_lib
from wsol_jax.context import Context, f_setup, frozen_f, g_setup
from wsol_jax.data.dataset import Split, crop_protocol_boxes
from wsol_jax.data.pipeline import map_split
from wsol_jax.errors import TrainingError
from wsol_jax.train import checkpoint, loop, steps
from wsol_jax.train.state import TrainState

F_CLASSIFIER, G_DIR = workdir_lib.F_CLASSIFIER, workdir_lib.G


def _lr_hint(net: str, ctx: Context) -> str:
    lr = ctx.config[net].optimizer.learning_rate
    return (f'Lower config.{net}.optimizer.learning_rate (now {lr}, e.g. to {lr / 10:g}) and run again with '
            f'--config.overwrite=True' + (' (or use dtype=float32)' if ctx.config.dtype != 'float32' else ''))


def train_f(ctx: Context) -> None:
    """Stage train_f: each f network of the method (the classifier with cross-entropy and, for
    Method II, the Siamese embedding with the triplet loss of Eq. 2). They are frozen afterwards;
    their validation accuracy is recorded."""
    cfg = ctx.config
    for name in ctx.method.f_networks:
        network = methods.F_NETWORKS[name]
        model, state, n_steps = f_setup(ctx, name)
        fn = network.step(model, ctx.crop, cfg.f, cfg.g)
        batches = functools.partial(network.batches, ctx.data.train, cfg.f.batch_size, ctx.mesh,
                                    threads=cfg.data.read_threads)
        if parallel.is_chief():
            workdir_lib.record(ctx.workdir, cfg, name)
        epochs = methods.f_epochs(cfg.f, name)
        spec = loop.Loop(name, ctx.path(name), epochs, n_steps, network.images_per_example * cfg.f.batch_size,
                         ctx.path(workdir_lib.history_name(name)), keep='latest', hint=_lr_hint('f', ctx),
                         writer=ctx.writer)
        quality = workdir_lib.read_json(ctx.path(workdir_lib.F_QUALITY), {})
        trained = checkpoint.latest_epoch(ctx.path(name))
        state = loop.run(spec, state, steps.compile_step(fn, ctx.mesh), batches, ctx.key(name))
        if name not in quality or trained != epochs:   # measured once, after the last epoch
            _record_f_quality(ctx, name, model, state.variables)


def _outputs(ctx: Context, fn, split: Split) -> np.ndarray:
    """`fn(images)` over a split, `(N, ...)` numpy, in order."""
    batch = ctx.config.eval.batch_size
    return np.concatenate([parallel.to_host(out)[:len(valid)]
                           for (out,), valid in map_split(lambda b: fn(b['image']), split, batch, ctx.mesh,
                                   ctx.config.data.read_threads)])


def f_accuracy(ctx: Context, name: str, model, variables) -> float:
    """Validation accuracy of `f`: Top-1 of the classifier; for the Siamese embedding, the
    nearest class mean (class means of the training embeddings, Euclidean as in Eq. 2)."""
    fn = inference.compile_f_outputs(model, ctx.crop)
    out = _outputs(ctx, functools.partial(fn, variables), ctx.data.val)
    if name == F_CLASSIFIER:
        return float(np.mean(np.argmax(out, -1) == ctx.data.val.labels))
    train = _outputs(ctx, functools.partial(fn, variables), ctx.data.train)
    classes = np.unique(ctx.data.train.labels)
    means = np.stack([train[ctx.data.train.labels == c].mean(0) for c in classes])
    nearest = classes[np.argmin(((out[:, None] - means[None]) ** 2).sum(-1), axis=1)]
    return float(np.mean(nearest == ctx.data.val.labels))


def _record_f_quality(ctx: Context, name: str, model, variables) -> dict:
    accuracy = f_accuracy(ctx, name, model, variables)
    chance = 1.0 / ctx.data.num_classes
    entry = {'val_accuracy': accuracy, 'chance': chance, 'measure': methods.F_NETWORKS[name].measure}
    if parallel.is_chief():
        quality = workdir_lib.read_json(ctx.path(workdir_lib.F_QUALITY), {})
        quality[name] = entry
        workdir_lib.write_json(ctx.path(workdir_lib.F_QUALITY), quality)
    parallel.barrier('f_quality')
    print(f'[{name}] validation accuracy {accuracy:.3f} ({entry["measure"]}; chance {chance:.3f})')
    return entry


def check_f_quality(ctx: Context, names: tuple[str, ...]) -> None:
    """Stop before training g on an f that is near chance: g is only as good as its f."""
    cfg = ctx.config
    quality = workdir_lib.read_json(ctx.path(workdir_lib.F_QUALITY), {})
    for name in names:
        entry = quality.get(name)
        if entry is None:   # f trained elsewhere or by an older version: measure it now
            model, variables = frozen_f(ctx, name)
            entry = _record_f_quality(ctx, name, model, variables)
        floor = cfg.f.min_accuracy_over_chance * entry['chance']
        if entry['val_accuracy'] < floor and not cfg.f.allow_weak:
            raise TrainingError(
                f'{name} reaches {entry["val_accuracy"]:.3f} validation accuracy, below {floor:.3f} '
                f'({cfg.f.min_accuracy_over_chance:g}x chance {entry["chance"]:.3f}): g trained on it would localise '
                f'nothing. Train f better (more f.epochs, ImageNet weights f.pretrained, another '
                f'f.optimizer.learning_rate) with --config.overwrite=True, or continue with --config.f.allow_weak=True')


def validation_scores(ctx: Context, map_fn, g_vars) -> tuple[dict, np.ndarray]:
    """Mean S (Eq. 6) over the validation split and its standard error, the selection criterion
    (no box used), with the share of degenerate and collapsed maps; and, only as a diagnostic,
    GT-known loc on the validation boxes when there are any. Returns the metrics and the maps of the first
    `eval.strip_images` validation images."""
    split, cfg = ctx.data.val, ctx.config
    per_image, ious, strip = [], [], []
    for (maps, maps_hat), valid in map_split(lambda b: map_fn(g_vars, b['image']), split, cfg.eval.batch_size,
                                             ctx.mesh, cfg.data.read_threads):
        maps, maps_hat = parallel.to_host(maps)[:len(valid)], parallel.to_host(maps_hat)[:len(valid)]
        boxes = localization.boxes_from_thresholded(maps_hat)
        per_image.append(inference.map_scores(maps, maps_hat, boxes, cfg.eval.max_coverage))
        if split.boxes is not None:
            gt = crop_protocol_boxes(split, valid, ctx.crop)
            ious.append(metrics.best_iou(boxes, gt))
        if sum(map(len, strip)) < cfg.eval.strip_images:
            strip.append(maps)
    scores = {k: np.concatenate([p[k] for p in per_image]) for k in per_image[0]}
    n = len(scores['S'])
    out = {'mean_S': float(np.mean(scores['S'])), 'mean_S_raw': float(np.mean(scores['S_raw'])),
           # the selection's tolerance (selection.select_epoch: one standard error of the best epoch)
           'mean_S_se': float(np.std(scores['S'], ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
           'val/degenerate': float(np.mean(scores['degenerate'])), 'val/collapsed': float(np.mean(scores['collapsed']))}
    if ious:
        out['val/gt_known_loc'] = float(np.mean(np.concatenate(ious) >= 0.5))
    return out, np.concatenate(strip)[:cfg.eval.strip_images]


def train_g(ctx: Context) -> None:
    """Stage train_g: `g` with `f` frozen; after every epoch the mean S on the validation split,
    the history, and the checkpoints of the best-S and the latest epoch."""
    cfg, method = ctx.config, ctx.method
    check_f_quality(ctx, (method.g_uses,))
    f_model, f_vars = frozen_f(ctx, method.g_uses)
    g_model, state, n_steps = g_setup(ctx)
    fn = functools.partial(steps.g_step, g_model, f_model, cfg.g, ctx.crop, method.g_objective)
    compiled = steps.compile_step(fn, ctx.mesh, n_frozen=1)
    step = lambda s, batch, rng: compiled(s, f_vars, batch, rng)
    batches = functools.partial(method.batches, ctx.data.train, cfg.g.batch_size, ctx.mesh, threads=cfg.data.read_threads)
    map_fn = inference.compile_weight_maps(g_model, ctx.crop, cfg.eval)
    if parallel.is_chief():
        workdir_lib.record(ctx.workdir, cfg, G_DIR)
        os.makedirs(ctx.path(workdir_lib.STRIP), exist_ok=True)
        if checkpoint.latest_epoch(ctx.path(G_DIR)) != cfg.g.epochs:
            workdir_lib.remove_derived(ctx.workdir)   # a selection of fewer epochs is stale now

    def epoch_end(epoch: int, s: TrainState):
        scores, strip = validation_scores(ctx, map_fn, s.variables)
        if parallel.is_chief():
            np.save(ctx.path(workdir_lib.STRIP, f'epoch_{epoch:03d}.npy'), (strip * 255).round().astype(np.uint8))
        if scores['val/collapsed'] >= 0.9:
            print(f'[g] warning: epoch {epoch}: the weight map collapsed (weights all below 0.1 or all above 0.9) '
                  f'on {100 * scores["val/collapsed"]:.0f}% of the validation images')
        return scores, {}

    per_step = cfg.g.batch_size * method.images_per_example
    spec = loop.Loop('g', ctx.path(G_DIR), cfg.g.epochs, n_steps, per_step, ctx.path(workdir_lib.G_HISTORY),
                     keep='all' if cfg.g.keep_all_checkpoints else 'selected_and_latest',
                     selection_se=cfg.eval.selection_se,
                     hint=_lr_hint('g', ctx), writer=ctx.writer)
    loop.run(spec, state, step, batches, ctx.key('g'), epoch_end)


__all__ = ['train_f', 'train_g', 'check_f_quality', 'f_accuracy', 'validation_scores']
