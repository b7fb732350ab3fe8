"""What every stage shares: the run's context, and the networks built or restored from the workdir.

Training stages (`wsol_jax.stages.train_f`, `train_g`) build fresh train states here; the stages that train
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
from wsol_jax.train import budgets, checkpoint, loop
from wsol_jax.models.build import build_classifier, build_weight_map_net
from wsol_jax.train.state import TrainState, abstract_train_state, create_train_state, make_optimizer


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


def _setup(ctx: Context, model, net_cfg, init_name: str, abstract: bool, backbone: str) -> tuple[TrainState, int]:
    """A replicated train state for `model` (abstract: only its structure, as a restore target).
    With `net_cfg.pretrained`, the ResNet `backbone` submodule starts from those weights."""
    n_steps = steps_per_epoch(len(ctx.data.train), net_cfg.batch_size)
    shape, tx = (1, ctx.crop, ctx.crop, 3), make_optimizer(net_cfg.optimizer, n_steps, net_cfg.max_epochs)
    average = net_cfg.get('ema_decay', 0.0) > 0  # g: the moving average of its weights (train/state.py)
    if abstract:
        return abstract_train_state(model, shape, tx, parallel.replicated_sharding(ctx.mesh), average), n_steps
    state = create_train_state(model, ctx.key(init_name), shape, tx)
    if wants_pretrained(net_cfg.pretrained):
        arch = net_cfg.arch if 'arch' in net_cfg else net_cfg.depth  # f: any registered architecture; g: a ResNet
        variables = load_backbone(state.trained_variables, net_cfg.pretrained, arch, net_cfg.width, backbone)
        state = state.replace(params=variables['params'], batch_stats=variables['batch_stats'])
        print(f'[{init_name[5:]}] {backbone} initialised from {net_cfg.pretrained}')
    return parallel.replicate(state.with_average() if average else state, ctx.mesh), n_steps


def f_setup(ctx: Context, network: str, abstract: bool = False) -> tuple[object, TrainState, int]:
    """`(model, train state, steps per epoch)` of the f network `network` (a workdir stage name)."""
    cfg = ctx.config
    if network == workdir_lib.F_ENCODER:
        model = build_classifier(cfg, 0, 'encoder')
    else:
        model = build_classifier(
            cfg, cfg.f.embed_dim if methods.F_NETWORKS[network].embedding else ctx.data.num_classes
        )
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
    if 'backbone' in classifier['batch_stats']:  # a ViT has no BatchNorm
        stats['backbone'] = classifier['batch_stats']['backbone']
    print(f'[{workdir_lib.F_SIAMESE}] backbone initialised from the trained {workdir_lib.F_CLASSIFIER}')
    return state.replace(params=params, batch_stats=stats)


def g_setup(
    ctx: Context, abstract: bool = False, initial_weight: float | None = None
) -> tuple[object, TrainState, int]:
    """`(g, its train state, steps per epoch)`; `initial_weight`: the untrained map's value
    (`wsol_jax.train.start`; default `g.initial_weight`)."""
    model = build_weight_map_net(ctx.config, initial_weight)
    return (model, *_setup(ctx, model, ctx.config.g, 'init_g', abstract, 'encoder'))


def f_budget(ctx: Context, network: str, steps_per_epoch: int):
    """The `loop.Loop` of the f network `network` under this config (what it keeps, when it is done)."""
    return budgets.f_loop(ctx.config, ctx.workdir, network, steps_per_epoch)


def kept_f_step(ctx: Context, network: str, steps_per_epoch: int) -> int:
    """The step of the f network `network` that its budget kept; `WorkdirError` unless it finished.
    An encoder imported from its file (`f.train=False`) has one checkpoint, step 0."""
    spec = f_budget(ctx, network, steps_per_epoch)
    if network == workdir_lib.F_ENCODER:
        if 0 not in checkpoint.saved_steps(spec.directory):
            raise WorkdirError(
                f'no checkpoint of f ({network}) in {ctx.workdir}; run the stage that imports it first: --stage=train_f'
            )
        return 0
    latest = checkpoint.latest_step(spec.directory)
    history = loop.read_history(spec.history_path, latest or 0)
    if latest is None or not loop.finished(spec, history, latest):
        done = 'not trained' if latest is None else f'trained to epoch {latest / steps_per_epoch:.2f} and not finished'
        raise WorkdirError(
            f'{network} in {ctx.workdir} is {done} under this config (f.max_epochs='
            f'{ctx.config.f.max_epochs}, f.patience={ctx.config.f.patience}): g must not train on, or be '
            'judged with, a half-trained f; run --stage=train_f first'
        )
    return loop.kept_point(spec, history)


def frozen_f(ctx: Context, network: str) -> tuple[object, dict]:
    """`(f, its variables)` at the kept step of a finished f, restored from the workdir and
    replicated over the mesh."""
    model, state, n_steps = f_setup(ctx, network, abstract=True)
    variables, _ = checkpoint.restore_variables(
        ctx.path(network), state, kept_f_step(ctx, network, n_steps), what=f'f ({network})'
    )
    return model, variables


def restore_g(ctx: Context, g_state: TrainState, step: int) -> dict:
    """The variables of `g` after `step`; `g_state` is the restore target (`g_setup(abstract=True)`)."""
    variables, _ = checkpoint.restore_variables(ctx.path(workdir_lib.G), g_state, step, what='g')
    return variables
