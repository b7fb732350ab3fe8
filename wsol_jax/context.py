"""What every stage shares: the run's context, and the networks built or restored from the workdir.

Training stages (`wsol_jax.train.stages`) build fresh train states here; the stages that train
nothing (select, evaluate, export) restore `f` and `g` from the workdir's checkpoints here, never
building more than the abstract structure of an optimiser state as a restore target.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax

from wsol_jax import methods, parallel
from wsol_jax import workdir as workdir_lib
from wsol_jax.data.dataset import Dataset, steps_per_epoch
from wsol_jax.errors import WorkdirError
from wsol_jax.models.pretrained import load_backbone, wants_pretrained
from wsol_jax.train import checkpoint
from wsol_jax.train.state import (TrainState, abstract_train_state, build_classifier,
                                  build_weight_map_net, create_train_state, make_optimizer)


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

    @property
    def method(self) -> methods.Method:
        return methods.get(self.config.method)

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


def f_setup(ctx: Context, network: str, abstract: bool = False) -> tuple[object, TrainState, int]:
    """`(model, train state, steps per epoch)` of the f network `network` (a workdir stage name)."""
    cfg = ctx.config
    model = build_classifier(cfg, cfg.f.embed_dim if methods.F_NETWORKS[network].embedding else ctx.data.num_classes)
    state, n_steps = _setup(ctx, model, cfg.f, 'init_f', abstract, 'backbone')
    if not abstract and network == workdir_lib.F_SIAMESE and cfg.f.get('siamese_from_classifier', False):
        state = _with_classifier_backbone(ctx, state)
    return model, state, n_steps


def _with_classifier_backbone(ctx: Context, state: TrainState) -> TrainState:
    """The Siamese f's train state with the backbone (parameters and BatchNorm statistics) of the
    trained classifier: the start that ImageNet weights give it in the paper, where there are
    none; only the embedding head starts afresh."""
    _, classifier = frozen_f(ctx, workdir_lib.F_CLASSIFIER)
    params, stats = dict(state.params), dict(state.batch_stats)
    params['backbone'] = classifier['params']['backbone']
    stats['backbone'] = classifier['batch_stats']['backbone']
    print(f'[{workdir_lib.F_SIAMESE}] backbone initialised from the trained {workdir_lib.F_CLASSIFIER}')
    return state.replace(params=params, batch_stats=stats)


def g_setup(ctx: Context, abstract: bool = False) -> tuple[object, TrainState, int]:
    model = build_weight_map_net(ctx.config)
    return (model, *_setup(ctx, model, ctx.config.g, 'init_g', abstract, 'encoder'))


def frozen_f(ctx: Context, network: str) -> tuple[object, dict]:
    """`(f, its variables)` restored from the workdir, replicated over the mesh."""
    model, state, _ = f_setup(ctx, network, abstract=True)
    variables, meta = checkpoint.restore_variables(ctx.path(network), state, what=f'f ({network})')
    epochs = methods.f_epochs(ctx.config.f, network)
    if meta.get('epoch') != epochs:   # g must not train on, or be judged with, a half-trained f
        key = 'f.siamese_epochs' if epochs != ctx.config.f.epochs else 'f.epochs'
        raise WorkdirError(f'{network} in {ctx.workdir} was trained for {meta.get("epoch")} of config.{key}='
                           f'{epochs} epochs; run --stage=train_f first')
    return model, variables


def restore_g(ctx: Context, g_state: TrainState, epoch: int) -> dict:
    """The variables of `g` after `epoch`; `g_state` is the restore target (`g_setup(abstract=True)`)."""
    variables, _ = checkpoint.restore_variables(ctx.path(workdir_lib.G), g_state, epoch, what='g')
    return variables
