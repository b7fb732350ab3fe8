"""Start-up checks: everything a run will need, checked before its first step.

A mistake that would surface only after f has trained (on CUB, 200 epochs) stops the run at
once with one line that names the value or the file to fix.
"""

from __future__ import annotations

import os

import numpy as np

from wsol_jax import evaluators, methods, parallel
from wsol_jax.data.dataset import Dataset
from wsol_jax.errors import ConfigError, DataError
from wsol_jax.models.pretrained import check_pretrained, wants_pretrained


def _batch(config, key: str, batch_size: int, n_train: int, mesh) -> None:
    parallel.check_batch_size(batch_size, mesh, f'config.{key}')
    if n_train and batch_size > n_train:
        raise ConfigError(
            f'config.{key}={batch_size} is larger than the training split ({n_train} images): '
            'lower it, or use more training data'
        )


def _annotation_hint(config, split: str) -> str:
    """Where the boxes of a split come from, for the error message."""
    data = config.data
    if data.source == 'wsolevaluation':
        return os.path.join(data.metadata_dir or os.path.join(data.root, 'metadata'), split, 'localization.txt')
    if data.source == 'tfds':
        return f'TFDS {data.tfds_name} in {data.root}'
    return f'the {data.source} annotations in {data.root or "the generator"}'


def _check_rows(config) -> None:
    """The rows `eval.evaluators` makes for this run's f must include one that draws maps (the
    overlay figure shows them): e.g. `cam` alone with a ViT f, or with an encoder f, makes none."""
    absent = methods.not_defined(config)
    rows = evaluators.names(config, absent)
    if not any(evaluators.EVALUATORS[n].overlay for n in rows):
        left_out = [
            f'{n} ({absent[evaluators.EVALUATORS[n].needs]})'
            for n in config.eval.evaluators
            if evaluators.EVALUATORS[n].needs in absent
        ]
        raise ConfigError(
            f'config.eval.evaluators: {tuple(config.eval.evaluators)!r} makes no row with maps for this f'
            f'{": left out " + "; ".join(left_out) if left_out else ""}; add weight_map_selected'
        )


def check_run(config, data: Dataset, mesh, stages: tuple[str, ...]) -> None:
    """Batch sizes against the splits and devices, the crop against the images, weight files, the
    classes Method II draws triplets from, annotations the evaluation needs. The one owner of
    these checks: the stages (`wsol_jax.run`) and `fit_weight_map` both call it."""
    n_train = len(data.train)
    for name in ('train', 'val', 'test'):
        split = getattr(data, name)
        if len(split) and config.data.crop_size > split.size:
            raise ConfigError(
                f'config.data.crop_size={config.data.crop_size} exceeds the {name} images ({split.size} px): '
                'lower it, or give larger images'
            )
    if 'train_f' in stages:
        _batch(config, 'f.batch_size', config.f.batch_size, n_train, mesh)
        if wants_pretrained(config.f.pretrained):
            check_pretrained(config.f.pretrained, config.f.arch, config.f.width)
    if 'train_g' in stages:
        _batch(config, 'g.batch_size', config.g.batch_size, n_train, mesh)
        if wants_pretrained(config.g.pretrained):
            check_pretrained(config.g.pretrained, config.g.depth, config.g.width)
    _batch(config, 'eval.batch_size', config.eval.batch_size, 0, mesh)
    if methods.get(config.method).images_per_example == 3 and len(np.unique(data.train.labels)) < 2:
        raise DataError(
            'Method II draws triplets (anchor, positive, negative) and needs at least two classes in the training split'
        )
    if len(data.val) == 0:
        raise DataError('the validation split is empty: the epoch selection by S needs validation images')
    if 'evaluate' in stages and data.test.boxes is None:  # every evaluator scores boxes (masks give theirs)
        what = (
            f'no boxes or masks ({_annotation_hint(config, "test")} is missing or empty)'
            if data.test.masks is None
            else f'no boxes: its masks are all empty ({_annotation_hint(config, "test")})'
        )
        raise DataError(
            f'the test split has {what}: localization cannot be evaluated. Add them, or run '
            '--stage=train_f/train_g/select only'
        )
    if 'evaluate' in stages:
        _check_rows(config)
    if config.eval.save_maps:  # the ids name the scoremaps: an unusable one stops now, not after training
        from wsol_jax import wsolevaluation

        wsolevaluation.image_ids(data.test)
