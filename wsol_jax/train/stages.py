"""The training stages of the method: pre-train `f`, train `g`, select the epoch by S.

Workdir layout: `f_classifier/` (Method I `f`; also the classifier of Top-1 cls and the CAM
baseline in both methods), `f_siamese/` (Method II `f`), `g/` (one checkpoint per epoch, ranked
by mean S), `strip/epoch_XXX.npy` (maps of a few validation images per epoch, for the Fig. 4-style
strip), `selection.json`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Optional

import jax
import numpy as np

from wsol_jax import localization, metrics, parallel
from wsol_jax.data.dataset import Dataset, center_crop_boxes, steps_per_epoch
from wsol_jax.data.pipeline import classification_batches, map_split, triplet_batches
from wsol_jax.errors import ConfigError, WorkdirError
from wsol_jax.models.pretrained import load_backbone
from wsol_jax.train import checkpoint, loop, steps
from wsol_jax.train.state import (TrainState, abstract_train_state, build_classifier,
                                  build_weight_map_net, create_train_state, make_optimizer)

F_CLASSIFIER, F_SIAMESE, G_DIR, STRIP_DIR, SELECTION = 'f_classifier', 'f_siamese', 'g', 'strip', 'selection.json'


@dataclasses.dataclass
class Context:
    config: object
    workdir: str
    data: Dataset
    mesh: object
    writer: Optional[object] = None

    def path(self, *parts: str) -> str:
        return os.path.join(self.workdir, *parts)

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
    if net_cfg.pretrained:
        variables = load_backbone(state.variables, net_cfg.pretrained, net_cfg.depth, net_cfg.width, backbone)
        state = state.replace(params=variables['params'], batch_stats=variables['batch_stats'])
        print(f'[{init_name[5:]}] {backbone} initialised from {net_cfg.pretrained}')
    return parallel.replicate(state, ctx.mesh), n_steps


def _f_setup(ctx: Context, siamese: bool, abstract: bool = False) -> tuple[object, TrainState, int]:
    cfg = ctx.config
    model = build_classifier(cfg, cfg.f.embed_dim if siamese else ctx.data.num_classes)
    return (model, *_setup(ctx, model, cfg.f, 'init_f', abstract, 'backbone'))


def _check_enough_data(ctx: Context, batch_size: int, key: str) -> None:
    if len(ctx.data.train) < batch_size:
        raise ConfigError(f'the training split has {len(ctx.data.train)} images, fewer than {key}={batch_size}')


def train_f(ctx: Context) -> None:
    """Stage train_f: the classifier (cross-entropy) and, for Method II, the Siamese embedding
    (triplet loss, Eq. 2). Both are frozen afterwards."""
    cfg = ctx.config
    parallel.check_batch_size(cfg.f.batch_size, ctx.mesh, 'config.f')
    _check_enough_data(ctx, cfg.f.batch_size, 'config.f.batch_size')
    todo = [False] + ([True] if cfg.method == 'method2' else [])
    for siamese in todo:
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
        spec = loop.Loop(name, ctx.path(name), cfg.f.epochs, n_steps, per_step, writer=ctx.writer)
        loop.run(spec, state, steps.compile_step(fn, ctx.mesh), batches, ctx.key(name))


def frozen_f(ctx: Context, siamese: bool) -> tuple[object, dict]:
    """`(f, its variables)` restored from the workdir, replicated over the mesh."""
    model, state, _ = _f_setup(ctx, siamese, abstract=True)
    name = F_SIAMESE if siamese else F_CLASSIFIER
    variables, _ = checkpoint.restore_variables(ctx.path(name), state, what=f'f ({name})')
    return model, variables


def g_setup(ctx: Context, abstract: bool = False) -> tuple[object, TrainState, int]:
    model = build_weight_map_net(ctx.config)
    return (model, *_setup(ctx, model, ctx.config.g, 'init_g', abstract, 'encoder'))


def compile_weight_maps(ctx: Context, g_model):
    """`(g_vars, images) -> (M, M_hat)` compiled once per run."""
    return jax.jit(functools.partial(steps.weight_maps, g_model, ctx.crop, ctx.config.eval.threshold_ratio))


def validation_scores(ctx: Context, map_fn, g_vars) -> tuple[dict, np.ndarray]:
    """Mean S (Eq. 6) over the validation split, the selection criterion (no box used), and,
    only for the plot of the report, GT-known loc on the validation boxes when there are any.
    Returns the metrics and the maps of the first `eval.strip_images` validation images."""
    split, cfg = ctx.data.val, ctx.config
    score = jax.jit(localization.containment_score)
    s_values, ious, strip = [], [], []
    for (maps, maps_hat), valid in map_split(lambda b: map_fn(g_vars, b['image']), split, cfg.eval.batch_size, ctx.mesh):
        boxes = localization.boxes_from_maps(parallel.to_host(maps_hat), cfg.eval.threshold_ratio)
        s_values.append(parallel.to_host(score(maps_hat, boxes))[:len(valid)])
        if split.boxes is not None:
            gt = center_crop_boxes(split.boxes[valid], split.size, ctx.crop)
            ious.append(metrics.best_iou(boxes[:len(valid)], gt))
        if sum(map(len, strip)) < cfg.eval.strip_images:
            strip.append(parallel.to_host(maps)[:len(valid)])
    out = {'mean_S': float(np.mean(np.concatenate(s_values)))}
    if ious:
        out['val/gt_known_loc'] = float(np.mean(np.concatenate(ious) >= 0.5))
    return out, np.concatenate(strip)[:cfg.eval.strip_images]


def train_g(ctx: Context) -> None:
    """Stage train_g: `g` with `f` frozen; after every epoch the mean S on the validation split
    and a checkpoint."""
    cfg = ctx.config
    parallel.check_batch_size(cfg.g.batch_size, ctx.mesh, 'config.g')
    parallel.check_batch_size(cfg.eval.batch_size, ctx.mesh, 'config.eval')
    _check_enough_data(ctx, cfg.g.batch_size, 'config.g.batch_size')
    f_model, f_vars = frozen_f(ctx, siamese=(cfg.method == 'method2'))
    g_model, state, n_steps = g_setup(ctx)
    fn = functools.partial(steps.g_step, g_model, f_model, cfg.g, ctx.crop, cfg.method)
    compiled = steps.compile_step(fn, ctx.mesh, n_frozen=1)
    step = lambda s, batch, rng: compiled(s, f_vars, batch, rng)
    if cfg.method == 'method2':
        batches = functools.partial(triplet_batches, ctx.data.train, cfg.g.batch_size, ctx.mesh)
    else:
        batches = functools.partial(classification_batches, ctx.data.train, cfg.g.batch_size, ctx.mesh)
    map_fn = compile_weight_maps(ctx, g_model)
    os.makedirs(ctx.path(STRIP_DIR), exist_ok=True)

    def epoch_end(epoch: int, s: TrainState):
        scores, strip = validation_scores(ctx, map_fn, s.variables)
        if parallel.is_chief():
            np.save(ctx.path(STRIP_DIR, f'epoch_{epoch:03d}.npy'), (strip * 255).round().astype(np.uint8))
        return scores, {}

    per_step = cfg.g.batch_size * (3 if cfg.method == 'method2' else 1)
    spec = loop.Loop('g', ctx.path(G_DIR), cfg.g.epochs, n_steps, per_step, best_metric='mean_S',
                     writer=ctx.writer)
    loop.run(spec, state, step, batches, ctx.key('g'), epoch_end)


def select(ctx: Context) -> dict:
    """Stage select: the epoch of `g` with the highest mean S (Eq. 6); no box or mask is used."""
    directory = ctx.path(G_DIR)
    if not os.path.isdir(directory):
        raise WorkdirError(f'no checkpoint of g in {directory}; run --stage=train_g first')
    mgr = checkpoint.manager(directory, best_metric='mean_S', read_only=True)
    if not mgr.all_steps():
        raise WorkdirError(f'no checkpoint of g in {directory}; run --stage=train_g first')
    history = {e: m['metrics'] for e, m in checkpoint.all_meta(mgr).items()}
    selection = {'selected_epoch': int(mgr.best_step()), 'last_epoch': int(mgr.latest_step()),
                 'criterion': 'max mean containment score S (Eq. 6) on the validation split',
                 'history': {str(e): history[e] for e in sorted(history)}}
    if parallel.is_chief():
        with open(ctx.path(SELECTION), 'w') as fh:
            json.dump(selection, fh, indent=1)
    print(f'[select] epoch {selection["selected_epoch"]} '
          f'(mean S {history[selection["selected_epoch"]]["mean_S"]:.4f}) of {len(history)}')
    return selection


def load_selection(ctx: Context) -> dict:
    path = ctx.path(SELECTION)
    if not os.path.exists(path):
        raise WorkdirError(f'{path} is missing; run --stage=select first')
    with open(path) as fh:
        return json.load(fh)


def restore_g(ctx: Context, g_state: TrainState, epoch: int) -> dict:
    variables, _ = checkpoint.restore_variables(ctx.path(G_DIR), g_state, epoch, what='g')
    return variables


__all__ = ['Context', 'train_f', 'train_g', 'select', 'frozen_f', 'g_setup', 'restore_g',
           'load_selection', 'compile_weight_maps']
