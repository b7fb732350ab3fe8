"""The training stages of the method: pre-train `f`, train `g`, select the epoch by S.

Where things go in the workdir is named in `wsol_jax.workdir`. Each stage records its config
fingerprint before its first checkpoint, so that a rerun resumes only what it can continue.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Optional

import jax
import numpy as np

from wsol_jax import inference, localization, metrics, parallel, selection as selection_lib
from wsol_jax import workdir as workdir_lib
from wsol_jax.data.dataset import Dataset, Split, center_crop_boxes, steps_per_epoch
from wsol_jax.data.pipeline import classification_batches, map_split, triplet_batches
from wsol_jax.errors import TrainingError, WorkdirError
from wsol_jax.models.pretrained import load_backbone, wants_pretrained
from wsol_jax.train import checkpoint, loop, steps
from wsol_jax.train.state import (TrainState, abstract_train_state, build_classifier,
                                  build_weight_map_net, create_train_state, make_optimizer)

F_CLASSIFIER, F_SIAMESE, G_DIR = workdir_lib.F_CLASSIFIER, workdir_lib.F_SIAMESE, workdir_lib.G


@dataclasses.dataclass
class Context:
    config: object
    workdir: str
    data: Dataset
    mesh: object
    writer: Optional[object] = None

    def path(self, *parts: str) -> str:
        return workdir_lib.path(self.workdir, *parts)

    @property
    def crop(self) -> int:
        return self.config.data.crop_size

    def key(self, name: str) -> jax.Array:
        """A PRNG key per stage, derived from `config.seed`."""
        return jax.random.fold_in(jax.random.key(self.config.seed), sum(map(ord, name)))


def _setup(ctx: Context, model, net_cfg, init_name: str, abstract: bool,
           backbone: str) -> tuple[TrainState, int]:
    """A replicated train state for `model` (abstract: only its structure, as a restore target).
    With `net_cfg.pretrained`, the ResNet `backbone` submodule starts from those weights."""
    n_steps = steps_per_epoch(len(ctx.data.train), net_cfg.batch_size)
    shape, tx = (1, ctx.crop, ctx.crop, 3), make_optimizer(net_cfg.optimizer, n_steps)
    if abstract:
        return abstract_train_state(model, shape, tx, parallel.replicated_sharding(ctx.mesh)), n_steps
    state = create_train_state(model, ctx.key(init_name), shape, tx)
    if wants_pretrained(net_cfg.pretrained):
        variables = load_backbone(state.variables, net_cfg.pretrained, net_cfg.depth, net_cfg.width, backbone)
        state = state.replace(params=variables['params'], batch_stats=variables['batch_stats'])
        print(f'[{init_name[5:]}] {backbone} initialised from {net_cfg.pretrained}')
    return parallel.replicate(state, ctx.mesh), n_steps


def _f_setup(ctx: Context, siamese: bool, abstract: bool = False) -> tuple[object, TrainState, int]:
    cfg = ctx.config
    model = build_classifier(cfg, cfg.f.embed_dim if siamese else ctx.data.num_classes)
    return (model, *_setup(ctx, model, cfg.f, 'init_f', abstract, 'backbone'))


def _lr_hint(net: str, ctx: Context) -> str:
    lr = ctx.config[net].optimizer.learning_rate
    return (f'Lower config.{net}.optimizer.learning_rate (now {lr}, e.g. to {lr / 10:g}) and run again with '
            f'--config.overwrite=True' + (' (or use dtype=float32)' if ctx.config.dtype != 'float32' else ''))


def train_f(ctx: Context) -> None:
    """Stage train_f: the classifier (cross-entropy) and, for Method II, the Siamese embedding
    (triplet loss, Eq. 2). Both are frozen afterwards; their validation accuracy is recorded."""
    cfg = ctx.config
    for siamese in [False] + ([True] if cfg.method == 'method2' else []):
        model, state, n_steps = _f_setup(ctx, siamese)
        if siamese:
            fn = functools.partial(steps.f_triplet_step, model, ctx.crop, cfg.f.margin)
            batches = functools.partial(triplet_batches, ctx.data.train, cfg.f.batch_size, ctx.mesh)
            per_step = 3 * cfg.f.batch_size
        else:
            fn = functools.partial(steps.f_classifier_step, model, ctx.crop)
            batches = functools.partial(classification_batches, ctx.data.train, cfg.f.batch_size, ctx.mesh)
            per_step = cfg.f.batch_size
        name = F_SIAMESE if siamese else F_CLASSIFIER
        if parallel.is_chief():
            workdir_lib.record(ctx.workdir, cfg, name)
        spec = loop.Loop(name, ctx.path(name), cfg.f.epochs, n_steps, per_step, ctx.path(workdir_lib.history_name(name)),
                         keep='latest', hint=_lr_hint('f', ctx), writer=ctx.writer)
        quality = workdir_lib.read_json(ctx.path(workdir_lib.F_QUALITY), {})
        trained = checkpoint.latest_epoch(ctx.path(name))
        state = loop.run(spec, state, steps.compile_step(fn, ctx.mesh), batches, ctx.key(name))
        if name not in quality or trained != cfg.f.epochs:   # measured once, after the last epoch
            _record_f_quality(ctx, name, model, state.variables)


def frozen_f(ctx: Context, siamese: bool) -> tuple[object, dict]:
    """`(f, its variables)` restored from the workdir, replicated over the mesh."""
    model, state, _ = _f_setup(ctx, siamese, abstract=True)
    name = F_SIAMESE if siamese else F_CLASSIFIER
    variables, meta = checkpoint.restore_variables(ctx.path(name), state, what=f'f ({name})')
    if meta.get('epoch') != ctx.config.f.epochs:   # g must not train on, or be judged with, a half-trained f
        raise WorkdirError(f'{name} in {ctx.workdir} was trained for {meta.get("epoch")} of config.f.epochs='
                           f'{ctx.config.f.epochs} epochs; run --stage=train_f first')
    return model, variables


def _outputs(ctx: Context, fn, split: Split) -> np.ndarray:
    """`fn(images)` over a split, `(N, ...)` numpy, in order."""
    batch = ctx.config.eval.batch_size
    return np.concatenate([parallel.to_host(out)[:len(valid)]
                           for (out,), valid in map_split(lambda b: fn(b['image']), split, batch, ctx.mesh)])


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
    entry = {'val_accuracy': accuracy, 'chance': chance,
             'measure': 'top-1' if name == F_CLASSIFIER else 'nearest class mean (top-1)'}
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
            model, variables = frozen_f(ctx, siamese=(name == F_SIAMESE))
            entry = _record_f_quality(ctx, name, model, variables)
        floor = cfg.f.min_accuracy_over_chance * entry['chance']
        if entry['val_accuracy'] < floor and not cfg.f.allow_weak:
            raise TrainingError(
                f'{name} reaches {entry["val_accuracy"]:.3f} validation accuracy, below {floor:.3f} '
                f'({cfg.f.min_accuracy_over_chance:g}x chance {entry["chance"]:.3f}): g trained on it would localise '
                f'nothing. Train f better (more f.epochs, ImageNet weights f.pretrained, another '
                f'f.optimizer.learning_rate) with --config.overwrite=True, or continue with --config.f.allow_weak=True')


def g_setup(ctx: Context, abstract: bool = False) -> tuple[object, TrainState, int]:
    model = build_weight_map_net(ctx.config)
    return (model, *_setup(ctx, model, ctx.config.g, 'init_g', abstract, 'encoder'))


def validation_scores(ctx: Context, map_fn, g_vars) -> tuple[dict, np.ndarray]:
    """Mean S (Eq. 6) over the validation split, the selection criterion (no box used), with
    the share of degenerate and collapsed maps; and, only as a diagnostic, GT-known loc on the
    validation boxes when there are any. Returns the metrics and the maps of the first
    `eval.strip_images` validation images."""
    split, cfg = ctx.data.val, ctx.config
    per_image, ious, strip = [], [], []
    for (maps, maps_hat), valid in map_split(lambda b: map_fn(g_vars, b['image']), split, cfg.eval.batch_size, ctx.mesh):
        maps, maps_hat = parallel.to_host(maps)[:len(valid)], parallel.to_host(maps_hat)[:len(valid)]
        boxes = localization.boxes_from_thresholded(maps_hat)
        per_image.append(inference.map_scores(maps, maps_hat, boxes, cfg.eval.max_coverage))
        if split.boxes is not None:
            gt = center_crop_boxes(split.boxes[valid], split.size, ctx.crop)
            ious.append(metrics.best_iou(boxes, gt))
        if sum(map(len, strip)) < cfg.eval.strip_images:
            strip.append(maps)
    scores = {k: np.concatenate([p[k] for p in per_image]) for k in per_image[0]}
    out = {'mean_S': float(np.mean(scores['S'])), 'mean_S_raw': float(np.mean(scores['S_raw'])),
           'val/degenerate': float(np.mean(scores['degenerate'])), 'val/collapsed': float(np.mean(scores['collapsed']))}
    if ious:
        out['val/gt_known_loc'] = float(np.mean(np.concatenate(ious) >= 0.5))
    return out, np.concatenate(strip)[:cfg.eval.strip_images]


def train_g(ctx: Context) -> None:
    """Stage train_g: `g` with `f` frozen; after every epoch the mean S on the validation split,
    the history, and the checkpoints of the best-S and the latest epoch."""
    cfg = ctx.config
    siamese = cfg.method == 'method2'
    check_f_quality(ctx, (F_SIAMESE,) if siamese else (F_CLASSIFIER,))
    f_model, f_vars = frozen_f(ctx, siamese=siamese)
    g_model, state, n_steps = g_setup(ctx)
    fn = functools.partial(steps.g_step, g_model, f_model, cfg.g, ctx.crop, cfg.method)
    compiled = steps.compile_step(fn, ctx.mesh, n_frozen=1)
    step = lambda s, batch, rng: compiled(s, f_vars, batch, rng)
    if siamese:
        batches = functools.partial(triplet_batches, ctx.data.train, cfg.g.batch_size, ctx.mesh)
    else:
        batches = functools.partial(classification_batches, ctx.data.train, cfg.g.batch_size, ctx.mesh)
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

    per_step = cfg.g.batch_size * (3 if siamese else 1)
    spec = loop.Loop('g', ctx.path(G_DIR), cfg.g.epochs, n_steps, per_step, ctx.path(workdir_lib.G_HISTORY),
                     keep='all' if cfg.g.keep_all_checkpoints else 'selected_and_latest',
                     hint=_lr_hint('g', ctx), writer=ctx.writer)
    loop.run(spec, state, step, batches, ctx.key('g'), epoch_end)


def select(ctx: Context) -> dict:
    """Stage select: the epoch of `g` with the highest mean S (Eq. 6); no box or mask is used."""
    latest = checkpoint.latest_epoch(ctx.path(G_DIR))
    history = loop.read_history(ctx.path(workdir_lib.G_HISTORY), latest or 0)
    if not history:
        raise WorkdirError(f'no trained g in {ctx.path(G_DIR)}; run --stage=train_g first')
    chosen = selection_lib.select_epoch(history)
    selection = {'selected_epoch': chosen, 'last_epoch': max(history),
                 'criterion': 'max mean containment score S (Eq. 6) on the validation split; degenerate maps '
                              f'(kept region > {ctx.config.eval.max_coverage:g} of the image) score 0; ties: earliest epoch',
                 'box_rule': ctx.config.eval.box_rule,
                 'regret': selection_lib.selection_regret(history, chosen),
                 'history': {str(e): history[e] for e in sorted(history)}}
    if parallel.is_chief():
        workdir_lib.write_json(ctx.path(workdir_lib.SELECTION), selection)
    parallel.barrier('selection')
    print(f'[select] epoch {chosen} (mean S {history[chosen]["mean_S"]:.4f}) of {len(history)}')
    return selection


def load_selection(ctx: Context) -> dict:
    selection = workdir_lib.read_json(ctx.path(workdir_lib.SELECTION))
    if selection is None or selection['last_epoch'] != checkpoint.latest_epoch(ctx.path(G_DIR)):
        raise WorkdirError(f'{ctx.path(workdir_lib.SELECTION)} is missing or older than the last epoch of g; '
                           'run --stage=select first')
    return selection


def restore_g(ctx: Context, g_state: TrainState, epoch: int) -> dict:
    variables, _ = checkpoint.restore_variables(ctx.path(G_DIR), g_state, epoch, what='g')
    return variables


__all__ = ['Context', 'train_f', 'train_g', 'select', 'frozen_f', 'g_setup', 'restore_g', 'load_selection',
           'check_f_quality', 'f_accuracy']
