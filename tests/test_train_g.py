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
        r'\(5x chance 0\.250\).*--config\.f\.allow_weak=True',
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
