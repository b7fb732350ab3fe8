"""The paper's two methods as data: which `f` they train, how batches are drawn, what `g` minimises.

Every place that differs between Method I and Method II reads it from here (`get(config.method)`)
instead of branching on the method's name.

  * Method I (Section 3.1): `f` is a classifier trained with cross-entropy; `g` keeps `f(I * g(I))`
    close to `f(I)` (Eq. 1). Examples are single images.
  * Method II (Section 3.2): `f` is a Siamese embedding trained with the triplet loss (Eq. 2); `g`
    minimises the inner and outer triplet losses (Eq. 3, Eq. 4). Examples are triplets (anchor,
    positive, negative). The classifier is trained as well: Top-1 loc needs a class prediction.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

from wsol_jax import workdir
from wsol_jax.data.pipeline import classification_batches, triplet_batches
from wsol_jax.errors import ConfigError
from wsol_jax.train import steps


@dataclasses.dataclass(frozen=True)
class FNetwork:
    """One kind of frozen network `f`: its workdir folder, its output and how it is trained."""
    stage: str
    embedding: bool              # outputs `f.embed_dim` features (else one logit per class)
    images_per_example: int      # 1 (an image) or 3 (a triplet)
    batches: Callable            # (split, batch_size, mesh, key) -> iterator of global batches
    step: Callable               # (model, crop_size, f_cfg, g_cfg) -> train step (state, batch, rng)
    measure: str                 # how its validation accuracy is measured (f_quality.json)


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    f_networks: tuple[str, ...]   # trained by train_f, in order
    g_uses: str                   # the f inside g's objective
    images_per_example: int
    batches: Callable
    g_objective: Callable         # steps.method1_objective / steps.method2_objective
    equations: str


F_NETWORKS = {
    workdir.F_CLASSIFIER: FNetwork(
        workdir.F_CLASSIFIER, embedding=False, images_per_example=1, batches=classification_batches,
        step=lambda model, crop, f_cfg, g_cfg: functools.partial(
            steps.f_classifier_step, model, crop, erase_prob=f_cfg.erase_prob, blank_weight=f_cfg.blank_weight,
            mask_space=g_cfg.mask_space),
        measure='top-1'),
    workdir.F_SIAMESE: FNetwork(
        workdir.F_SIAMESE, embedding=True, images_per_example=3, batches=triplet_batches,
        step=lambda model, crop, f_cfg, g_cfg: functools.partial(
            steps.f_triplet_step, model, crop, f_cfg.margin, erase_prob=f_cfg.erase_prob,
            blank_weight=f_cfg.blank_weight, mask_space=g_cfg.mask_space),
        measure='nearest class mean (top-1)'),
}

METHODS = {
    'method1': Method('method1', (workdir.F_CLASSIFIER,), workdir.F_CLASSIFIER, 1, classification_batches,
                      steps.method1_objective, 'Eq. 1 (cross-entropy D, L1 R)'),
    'method2': Method('method2', (workdir.F_CLASSIFIER, workdir.F_SIAMESE), workdir.F_SIAMESE, 3, triplet_batches,
                      steps.method2_objective, 'Eq. 3 + Eq. 4 + lambda R'),
}


def get(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f'method must be one of {tuple(METHODS)}, got {name!r}')
    return METHODS[name]
