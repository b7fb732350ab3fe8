"""Stage train_f: the frozen networks `f` of the method, each scored on the validation split.

Method I trains the classifier with cross-entropy; Method II also the Siamese embedding with the
triplet loss (Eq. 2); `f.train=False` imports f from `f.pretrained` as an encoder instead. Which
networks a run has is read from `wsol_jax.workdir.f_networks`, how each trains from
`wsol_jax.methods`; how long each trains and which of its points
it keeps from `wsol_jax.train.budgets`. The kept point's validation accuracy goes to
`f_quality.json`, which train_g reads before it trains g on that f.
"""

from __future__ import annotations

import functools

import numpy as np

from wsol_jax import inference, methods, parallel
from wsol_jax import workdir as workdir_lib
from wsol_jax.context import Context, f_setup
from wsol_jax.data.dataset import Augment, Split
from wsol_jax.data.pipeline import map_split
from wsol_jax.train import budgets, checkpoint, loop, steps


def run(ctx: Context) -> None:
    """Each f network of the method, scored on the validation split as it trains
    (`train.budgets`: its most accurate point is kept, and with `f.patience` it stops when it no
    longer improves). They are frozen afterwards; the kept accuracy is recorded."""
    cfg = ctx.config
    for name in workdir_lib.f_networks(cfg):
        if name == workdir_lib.F_ENCODER:
            import_encoder(ctx)
            continue
        network = methods.F_NETWORKS[name]
        model, state, n_steps = f_setup(ctx, name)
        augment = Augment(ctx.crop, cfg.data.flip, cfg.f.scale_jitter, cfg.f.colour_jitter)
        fn = network.step(model, augment, cfg.f, cfg.g)
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
            budgets.lr_hint(cfg, 'f'),
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
