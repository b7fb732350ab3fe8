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
from wsol_jax.config import check_method
from wsol_jax.data.pipeline import classification_batches, triplet_batches
from wsol_jax.models import registry
from wsol_jax.train import steps


@dataclasses.dataclass(frozen=True)
class FNetwork:
    """One kind of frozen network `f`: its workdir folder, its output and how it is trained."""

    stage: str
    embedding: bool  # outputs `f.embed_dim` features (else one logit per class)
    images_per_example: int  # 1 (an image) or 3 (a triplet)
    batches: Callable  # (split, batch_size, mesh, key) -> iterator of global batches
    step: Callable  # (model, crop_size, f_cfg, g_cfg) -> train step (state, batch, rng)
    measure: str  # how its validation accuracy is measured (f_quality.json)


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    images_per_example: int
    batches: Callable
    equations: str


@dataclasses.dataclass(frozen=True)
class GTarget:
    """What g's objective asks of f: the workdir network, its output (`'outputs'`: logits or the
    Siamese embedding; `'features'`: the pooled features of f used as an encoder) and the objective."""

    f_network: str
    f_output: str
    objective: Callable  # steps.method1_objective, steps.embedding_objective, steps.method2_objective
    equations: str


F_NETWORKS = {
    workdir.F_CLASSIFIER: FNetwork(
        workdir.F_CLASSIFIER,
        embedding=False,
        images_per_example=1,
        batches=classification_batches,
        step=lambda model, crop, f_cfg, g_cfg: functools.partial(
            steps.f_classifier_step,
            model,
            crop,
            erase_prob=f_cfg.erase_prob,
            erase_fill=f_cfg.erase_fill,
            blank_weight=f_cfg.blank_weight,
            mask_space=g_cfg.mask_space,
            label_smoothing=f_cfg.label_smoothing,
        ),
        measure='top-1',
    ),
    workdir.F_SIAMESE: FNetwork(
        workdir.F_SIAMESE,
        embedding=True,
        images_per_example=3,
        batches=triplet_batches,
        step=lambda model, crop, f_cfg, g_cfg: functools.partial(
            steps.f_triplet_step,
            model,
            crop,
            f_cfg.margin,
            erase_prob=f_cfg.erase_prob,
            erase_fill=f_cfg.erase_fill,
            blank_weight=f_cfg.blank_weight,
            mask_space=g_cfg.mask_space,
        ),
        measure='nearest class mean (top-1)',
    ),
    # f from a weight file used as it is (f.train=False): imported, never trained
    workdir.F_ENCODER: FNetwork(
        workdir.F_ENCODER,
        embedding=True,
        images_per_example=1,
        batches=None,
        step=None,
        measure='nearest class mean of its features (top-1)',
    ),
}

METHODS = {
    'method1': Method('method1', 1, classification_batches, 'Eq. 1 (cross-entropy D, L1 R)'),
    'method2': Method('method2', 3, triplet_batches, 'Eq. 3 + Eq. 4 + lambda R'),
}


def g_target(config) -> GTarget:
    """The f inside g's objective, and the objective: Eq. 1 on a classifier's distribution, its
    embedding form on an encoder's features (Method I); Eq. 3 + 4 on the Siamese f's embedding or on
    an encoder's features (Method II)."""
    encoder = config.f.kind == 'encoder' or not config.f.train
    network = (
        workdir.F_ENCODER
        if not config.f.train
        else (workdir.F_SIAMESE if config.method == 'method2' and not encoder else workdir.F_CLASSIFIER)
    )
    output = 'features' if encoder else 'outputs'
    if config.method == 'method2':
        return GTarget(network, output, steps.method2_objective, 'Eq. 3 + Eq. 4 + lambda R')
    if encoder:
        return GTarget(
            network, output, steps.embedding_objective, 'Eq. 1 with D the cosine distance of f\'s features, L1 R'
        )
    return GTarget(network, output, steps.method1_objective, 'Eq. 1 (cross-entropy D, L1 R)')


# What the evaluation reports only for some f (keys of `not_defined`), as the report names them.
NOT_DEFINED_NAMES = {'top_k': 'Top-1/Top-k loc and cls', 'cam': 'CAM of f (baseline)'}


def not_defined(config) -> dict[str, str]:
    """What the evaluation leaves out for this run's f, and why: `'top_k'` (Top-1/Top-k cls and
    loc need f's class prediction) and `'cam'` (CAM needs a class head on features averaged over
    positions; on any other layer it would be another method). Empty for the paper's ResNet
    classifier. The weight map's GT-known loc, MaxBoxAcc and PxAP need no class: always there."""
    if not workdir.has_classifier(config):
        reason = f'f has no class head ({config.f.arch} used as an encoder from f.pretrained, f.train=False)'
        return {'top_k': reason, 'cam': reason}
    if not registry.has_cam(config.f.arch):
        return {
            'cam': f'f ({config.f.arch}) pools a class token, not an average over positions, so CAM is not '
            'defined for it'
        }
    return {}


def get(name: str) -> Method:
    check_method(name)
    return METHODS[name]
