"""Train state, optimiser and model construction from a config."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from wsol_jax.models.dtypes import output_dtype


class TrainState(train_state.TrainState):
    """Flax's TrainState plus BatchNorm running statistics and, optionally, an exponential moving
    average of both (`average`, `{'params', 'batch_stats'}`; None: not kept).

    `variables` are what is evaluated, selected and exported: the average where one is kept
    (Polyak averaging), else the trained variables themselves."""

    batch_stats: Any = None
    average: Any = None

    @property
    def trained_variables(self) -> dict:
        return {'params': self.params, 'batch_stats': self.batch_stats}

    @property
    def variables(self) -> dict:
        return self.trained_variables if self.average is None else self.average

    def with_average(self) -> TrainState:
        """This state with an average that starts at its current variables (a copy: the compiled
        train step donates the state's buffers)."""
        return self.replace(average=jax.tree.map(jnp.copy, self.trained_variables))

    def update_average(self, decay: float) -> TrainState:
        """`average <- decay * average + (1 - decay) * variables` (jit-traceable); BatchNorm's
        statistics are averaged with the parameters so that they describe the averaged network."""
        return self.replace(average=optax.incremental_update(self.trained_variables, self.average, 1.0 - decay))


def parameter_dtype(model) -> jnp.dtype:
    """Parameters are float32 (bfloat16 compute keeps float32 parameters), float64 for a float64 model."""
    return output_dtype(getattr(model, 'dtype', jnp.float32))


OPTIMIZERS, SCHEDULES = ('sgd', 'adam', 'adamw'), ('step', 'cosine')


def learning_rate_schedule(opt_cfg, steps_per_epoch: int, max_epochs: int) -> optax.Schedule:
    """The paper's step decay (times `decay_factor` every `decay_every` epochs) or a cosine decay to 0
    at `max_epochs`, after the optional linear warm-up of `warmup_epochs`."""
    warmup_steps = int(round(opt_cfg.get('warmup_epochs', 0.0) * steps_per_epoch))
    schedule = opt_cfg.get('schedule', 'step')
    if schedule not in SCHEDULES:
        raise ValueError(f'optimizer.schedule must be one of {SCHEDULES}, got {schedule!r}')
    if schedule == 'cosine':
        return optax.warmup_cosine_decay_schedule(
            0.0, opt_cfg.learning_rate, warmup_steps, max(warmup_steps + 1, max_epochs * steps_per_epoch)
        )
    decay = optax.exponential_decay(
        opt_cfg.learning_rate,
        transition_steps=max(1, opt_cfg.decay_every * steps_per_epoch),
        decay_rate=opt_cfg.decay_factor,
        staircase=True,
    )
    # A warm-up keeps the first steps small while the gradients are largest (for g: the
    # untrained map halves the image contrast and f's cross-entropy is at its peak).
    return (
        decay
        if warmup_steps <= 0
        else optax.join_schedules(
            [optax.linear_schedule(0.0, opt_cfg.learning_rate, warmup_steps), decay], [warmup_steps]
        )
    )


def make_optimizer(opt_cfg, steps_per_epoch: int, max_epochs: int = 1) -> optax.GradientTransformation:
    """SGD, Adam or AdamW on `learning_rate_schedule`; SGD and Adam add the weight decay to the
    gradient (as PyTorch's SGD does), AdamW decouples it; optional global-norm clipping first."""
    schedule = learning_rate_schedule(opt_cfg, steps_per_epoch, max_epochs)
    clip = [optax.clip_by_global_norm(opt_cfg.clip_norm)] if opt_cfg.get('clip_norm', 0.0) > 0 else []
    if opt_cfg.name == 'adamw':
        return optax.chain(*clip, optax.adamw(schedule, weight_decay=opt_cfg.weight_decay))
    if opt_cfg.name == 'sgd':
        base = optax.sgd(schedule, momentum=opt_cfg.momentum or None)
    elif opt_cfg.name == 'adam':
        base = optax.adam(schedule)
    else:
        raise ValueError(f'optimizer.name must be one of {OPTIMIZERS}, got {opt_cfg.name!r}')
    return optax.chain(*clip, optax.add_decayed_weights(opt_cfg.weight_decay), base)


def abstract_train_state(
    model, input_shape: tuple[int, ...], tx: optax.GradientTransformation, sharding, average: bool = False
) -> TrainState:
    """The structure of a train state (with an `average` if asked) as `ShapeDtypeStruct`s placed
    on `sharding`: a restore target that costs no initialisation (compiling `init` takes seconds
    on CPU)."""

    def create():
        state = create_train_state(model, jax.random.key(0), input_shape, tx, jit=False)
        return state.with_average() if average else state

    abstract = jax.eval_shape(create)
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract)


def create_train_state(
    model,
    rng: jax.Array,
    input_shape: tuple[int, ...],
    tx: optax.GradientTransformation,
    params: Any = None,
    batch_stats: Any = None,
    jit: bool = True,
) -> TrainState:
    """Initialise `model` on zeros of `input_shape` (or take given params, e.g. pretrained)."""
    init = jax.jit(model.init) if jit else model.init
    variables = init(rng, jnp.zeros(input_shape, jnp.float32))
    dtype = parameter_dtype(model)
    if dtype != jnp.float32:  # Flax creates float32 variables whatever the compute dtype
        variables = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, variables)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables['params'] if params is None else params,
        batch_stats=variables.get('batch_stats', {}) if batch_stats is None else batch_stats,  # ViTs have none
        tx=tx,
    )
