"""Workdir helpers (wsol_jax/workdir.py): atomic writes, fingerprints."""

import os

import pytest

from helpers import tiny_synthetic
from wsol_jax import workdir


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / 'results.md'
    workdir.write_atomically(str(target), lambda fh: fh.write('complete'), text=True)

    def dies_half_way(fh):
        fh.write('trunc')
        raise KeyboardInterrupt  # a kill while writing

    with pytest.raises(KeyboardInterrupt):
        workdir.write_atomically(str(target), dies_half_way, text=True)
    assert target.read_text() == 'complete'
    assert os.listdir(tmp_path) == ['results.md']


def test_fingerprints_separate_what_each_stage_depends_on():
    a = tiny_synthetic('method1')
    b = tiny_synthetic('method1')
    b.g.max_epochs, b.g.patience, b.g.eval_every_steps = 9, 4, 2  # a longer budget continues a shorter one
    b.eval.num_overlays, b.data.cache_dir = 5, '/elsewhere'  # evaluate only
    for stage in workdir.TRAINED:
        assert workdir.fingerprint(a, stage) == workdir.fingerprint(b, stage)
    b.g.reg_weight = 0.5
    assert workdir.fingerprint(a, 'f_classifier') == workdir.fingerprint(b, 'f_classifier')
    assert workdir.fingerprint(a, 'g')['g.reg_weight'] != workdir.fingerprint(b, 'g')['g.reg_weight']
    b.f.max_epochs, b.f.patience = 3, 2  # f continues; g was trained with the f of the shorter budget
    assert workdir.fingerprint(a, 'f_classifier') == workdir.fingerprint(b, 'f_classifier')
    assert workdir.fingerprint(a, 'g')['f.max_epochs'] != workdir.fingerprint(b, 'g')['f.max_epochs']
    assert workdir.fingerprint(a, 'g')['f.patience'] != workdir.fingerprint(b, 'g')['f.patience']


def test_blank_weight_ties_f_to_the_mask_space_and_old_records_still_match():
    a = tiny_synthetic('method2')
    a.f.blank_weight = 0.0
    for stage in ('f_classifier', 'f_siamese'):
        assert 'g.mask_space' not in workdir.fingerprint(a, stage)  # f does not depend on g then
    a.f.blank_weight = 1.0
    for stage in ('f_classifier', 'f_siamese'):
        assert workdir.fingerprint(a, stage)['g.mask_space'] == 'normalized'  # the blank is g's zero map
    # A record written before the keys existed matches a config at the earlier behaviour only.
    a.f.blank_weight, a.g.initial_weight, a.g.start_agreement = 0.0, 0.5, 0.0
    added = ('f.blank_weight', 'g.initial_weight', 'g.start_agreement')
    old = {k: v for k, v in workdir.fingerprint(a, 'g').items() if k not in added}
    assert workdir._differences(old, workdir.fingerprint(a, 'g')) == []
    a.g.initial_weight = 0.9
    assert workdir._differences(old, workdir.fingerprint(a, 'g')) == ["g.initial_weight: '(unset)' -> 0.9"]
    a.g.initial_weight, a.g.start_agreement = 0.5, 0.9
    assert workdir._differences(old, workdir.fingerprint(a, 'g')) == ["g.start_agreement: '(unset)' -> 0.9"]


def test_a_siamese_f_from_the_classifier_depends_on_the_classifier_budget():
    a = tiny_synthetic('method2')
    a.f.siamese_from_classifier = False
    scratch = workdir.fingerprint(a, 'f_siamese')
    assert not set(workdir.BUDGET_KEYS['f']) & set(scratch)  # a longer budget continues
    a.f.siamese_from_classifier = True
    started = workdir.fingerprint(a, 'f_siamese')
    assert all(
        started[k] == a.f[k.split('.')[1]] for k in workdir.BUDGET_KEYS['f']
    )  # it starts from the kept classifier
    assert 'f.siamese_from_classifier' not in workdir.fingerprint(a, 'f_classifier')


def test_an_f_of_the_earlier_own_data_preset_is_not_reused():
    """The preset's f changed architecture (resnet18 -> resnet18_small): a workdir trained before
    differs in f.arch, so f, its Siamese f and g are retrained, never read with the new network."""
    from helpers import load_config

    new = load_config('custom', 'method1,small')
    new.data.root = '/data/mine'
    old = load_config('custom', 'method1,small')
    old.data.root, old.f.arch = '/data/mine', 'resnet18'
    for stage in ('f_classifier', 'g'):
        assert workdir._differences(workdir.fingerprint(old, stage), workdir.fingerprint(new, stage)) == [
            "f.arch: 'resnet18' -> 'resnet18_small'"
        ]


def test_a_g_of_the_recipe_before_the_moving_average_is_not_reused():
    """A g trained before `g.ema_decay` existed has no average in its checkpoints, and its selection
    scored its own weights: its fingerprint (no such key) must differ from the recipe's 0.98, so
    that g is retrained, while f (whose settings did not change) is reused."""
    from helpers import load_config

    new = load_config('synthetic', 'method1')
    old_g = {k: v for k, v in workdir.fingerprint(new, 'g').items() if k != 'g.ema_decay'}
    assert workdir._differences(old_g, workdir.fingerprint(new, 'g')) == ["g.ema_decay: '(unset)' -> 0.98"]
    assert 'g.ema_decay' not in workdir.fingerprint(new, 'f_classifier')


def test_an_f_from_before_the_erasing_fill_counts_as_mean_filled():
    """`f.erase_fill` came after f's were recorded with erasing to the mean colour: such an f
    matches 'mean' (reused) and differs from 'noise' (retrained, with g after it)."""
    from helpers import load_config

    mean = load_config('synthetic', 'method1')
    old = {k: v for k, v in workdir.fingerprint(mean, 'f_classifier').items() if k != 'f.erase_fill'}
    assert workdir._differences(old, workdir.fingerprint(mean, 'f_classifier')) == []
    noise = load_config('synthetic', 'method1')
    noise.f.erase_fill = 'noise'
    for stage in ('f_classifier', 'g'):
        old = {k: v for k, v in workdir.fingerprint(mean, stage).items() if k != 'f.erase_fill'}
        assert workdir._differences(old, workdir.fingerprint(noise, stage)) == ["f.erase_fill: '(unset)' -> 'noise'"]
