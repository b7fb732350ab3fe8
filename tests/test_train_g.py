"""Stage train_g (wsol_jax/stages/train_g.py): g trains only on an f that is finished and above chance."""

import os

import pytest

from helpers import copy_run, tiny_synthetic
from wsol_jax import run as run_lib
from wsol_jax.context import Context
from wsol_jax.errors import TrainingError, WorkdirError
from wsol_jax.stages.train_g import check_f_quality
from wsol_jax.workdir import F_QUALITY, write_json


def _config(**f):
    c = tiny_synthetic('method1', g_epochs=1)
    c.f.update(f)
    return c


def test_the_weak_f_stop_needs_labels_to_measure_f_by(tmp_path):
    """One class: every answer of f is right (accuracy 1 = chance), so the floor of 2x chance
    would stop every run; there is nothing to measure f by, and g trains. Two classes: it stops."""
    config = _config(allow_weak=False)
    ctx = Context(config, str(tmp_path), data=None, mesh=None)
    write_json(ctx.path(F_QUALITY), {'f_encoder': {'val_accuracy': 1.0, 'chance': 1.0}})
    check_f_quality(ctx, ('f_encoder',))
    write_json(ctx.path(F_QUALITY), {'f_encoder': {'val_accuracy': 0.5, 'chance': 0.5}})
    with pytest.raises(TrainingError, match='f_encoder reaches 0.500 validation accuracy, below 1.000'):
        check_f_quality(ctx, ('f_encoder',))


def test_a_classifier_at_chance_stops_before_g(method1_run, tmp_path):
    workdir, _ = method1_run
    copy = copy_run(workdir, tmp_path / 'w', 'f_classifier', 'f_quality.json', 'fingerprints')
    cfg = tiny_synthetic('method1')
    cfg.f.allow_weak = False
    cfg.f.min_accuracy_over_chance = 5.0  # 5 x chance = 1.25: out of reach
    with pytest.raises(
        TrainingError,
        match=r'f_classifier reaches 0\.\d+ validation accuracy, below 1\.250 '
        r'\(5x chance 0\.250\).*ImageNet weights f\.pretrained, e\.g\. configs/custom\.py:method1,small,pretrained'
        r'.*--config\.f\.allow_weak=True',
    ):
        run_lib.run(cfg, copy, 'train_g')
    assert not os.path.exists(os.path.join(copy, 'g'))


def test_g_never_trains_on_a_half_trained_f(method1_run, tmp_path):
    workdir, _ = method1_run
    copy = copy_run(workdir, tmp_path / 'w', 'f_classifier', 'f_quality.json', 'fingerprints')
    cfg = tiny_synthetic('method1')
    cfg.f.max_epochs = 2  # f in the workdir has 1 of 2 epochs
    with pytest.raises(
        WorkdirError,
        match=r'f_classifier .* is trained to epoch 1\.00 and not finished under this '
        r'config \(f\.max_epochs=2, f\.patience=0\).*run --stage=train_f first',
    ):
        run_lib.run(cfg, copy, 'train_g')


def test_g_starts_where_its_f_still_answers_and_the_paper_at_its_initial_weight(capsys, monkeypatch):
    """`train_g.initial_weight`: the recipe raises the untrained map to the first candidate where f
    answers on nearly every dimmed training image as on the image (here: f names the class by the
    image's brightness, and only a weight of 0.9 keeps these images above its threshold); the
    paper's config starts at g.initial_weight whatever f does. Classifier logits by top class,
    every other objective's outputs as embeddings."""
    import jax.numpy as jnp
    import numpy as np
    from wsol_jax.data.dataset import Dataset, Split, center_crop
    from wsol_jax.stages import train_g
    from wsol_jax.train import steps

    cfg = tiny_synthetic('method1')
    images = np.full((8, 32, 32, 3), 230, np.uint8)
    data = Dataset(Split(images, np.zeros(8, np.int32), None), None, None, 2)
    ctx = Context(cfg, '/nonexistent', data=data, mesh=None)
    level = float(jnp.mean(center_crop(images[:1], 32)))
    f_apply = lambda v, x: jnp.stack([jnp.mean(x, axis=(1, 2, 3)) - 0.85 * level, jnp.zeros(len(x))], -1)
    assert train_g.initial_weight(ctx, f_apply, {}, steps.method1_objective) == 0.9
    assert (
        'the untrained map is 0.9: f answers on the dimmed training images as on the images for a share of '
        '0.00 at 0.5, 0.00 at 0.6, 0.00 at 0.7, 0.00 at 0.8, 1.00 at 0.9' in capsys.readouterr().out
    )
    cfg.g.start_agreement = 0.0
    assert train_g.initial_weight(ctx, f_apply, {}, steps.method1_objective) == 0.5
    assert 'untrained map' not in capsys.readouterr().out  # nothing measured, nothing printed
    kinds = []
    monkeypatch.setattr(train_g.start, 'start_weight', lambda *a, embedding, **k: kinds.append(embedding) or (0.5, {}))
    for objective in (steps.method1_objective, steps.embedding_objective, steps.method2_objective):
        train_g.initial_weight(ctx, f_apply, {}, objective)
    assert kinds == [False, True, True]
