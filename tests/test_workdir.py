"""Workdir helpers: atomic writes, fingerprints; per-image flags of collapsed maps."""
import os

import numpy as np
import pytest

from helpers import tiny_synthetic
from wsol_jax import inference, localization, workdir


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / 'results.md'
    workdir.write_atomically(str(target), lambda fh: fh.write('complete'), text=True)

    def dies_half_way(fh):
        fh.write('trunc')
        raise KeyboardInterrupt   # a kill while writing
    with pytest.raises(KeyboardInterrupt):
        workdir.write_atomically(str(target), dies_half_way, text=True)
    assert target.read_text() == 'complete'
    assert os.listdir(tmp_path) == ['results.md']


def test_fingerprints_separate_what_each_stage_depends_on():
    a = tiny_synthetic('method1')
    b = tiny_synthetic('method1')
    b.g.epochs, b.eval.num_overlays, b.data.cache_dir = 9, 5, '/elsewhere'   # continue / evaluate only
    for stage in workdir.TRAINED:
        assert workdir.fingerprint(a, stage) == workdir.fingerprint(b, stage)
    b.g.reg_weight = 0.5
    assert workdir.fingerprint(a, 'f_classifier') == workdir.fingerprint(b, 'f_classifier')
    assert workdir.fingerprint(a, 'g')['g.reg_weight'] != workdir.fingerprint(b, 'g')['g.reg_weight']
    b.f.epochs = 3                # f continues; g was trained with the shorter f
    assert workdir.fingerprint(a, 'f_classifier') == workdir.fingerprint(b, 'f_classifier')
    assert workdir.fingerprint(a, 'g')['f.epochs'] != workdir.fingerprint(b, 'g')['f.epochs']


def test_blank_weight_ties_f_to_the_mask_space_and_old_records_still_match():
    a = tiny_synthetic('method2')
    a.f.blank_weight = 0.0
    for stage in ('f_classifier', 'f_siamese'):
        assert 'g.mask_space' not in workdir.fingerprint(a, stage)   # f does not depend on g then
    a.f.blank_weight = 1.0
    for stage in ('f_classifier', 'f_siamese'):
        assert workdir.fingerprint(a, stage)['g.mask_space'] == 'normalized'   # the blank is g's zero map
    # A record written before the keys existed matches a config at the earlier behaviour only.
    a.f.blank_weight, a.g.initial_weight = 0.0, 0.5
    old = {k: v for k, v in workdir.fingerprint(a, 'g').items() if k not in ('f.blank_weight', 'g.initial_weight')}
    assert workdir._differences(old, workdir.fingerprint(a, 'g')) == []
    a.g.initial_weight = 0.9
    assert workdir._differences(old, workdir.fingerprint(a, 'g')) == ["g.initial_weight: '(unset)' -> 0.9"]


def test_a_siamese_f_from_the_classifier_depends_on_the_classifier_length():
    a = tiny_synthetic('method2')
    a.f.siamese_from_classifier, a.f.siamese_epochs = False, 0
    scratch = workdir.fingerprint(a, 'f_siamese')
    assert 'f.epochs' not in scratch and 'f.siamese_epochs' not in scratch   # a longer run continues
    a.f.siamese_from_classifier, a.f.siamese_epochs = True, 2
    started = workdir.fingerprint(a, 'f_siamese')
    assert started['f.epochs'] == a.f.epochs and 'f.siamese_epochs' not in started
    assert 'f.siamese_from_classifier' not in workdir.fingerprint(a, 'f_classifier')
    # A Siamese record from before the keys existed matches only a from-scratch Siamese f.
    assert workdir._differences(scratch, workdir.fingerprint(a, 'f_siamese')) == [
        f"f.epochs: '(unset)' -> {a.f.epochs}", "f.siamese_from_classifier: False -> True"]
    old = {k: v for k, v in scratch.items() if k != 'f.siamese_from_classifier'}
    a.f.siamese_from_classifier = False
    assert workdir._differences(old, workdir.fingerprint(a, 'f_siamese')) == []


def test_collapsed_maps_are_flagged():
    maps = np.zeros((3, 16, 16), np.float32)
    maps[0] = 0.02                               # weights nothing
    maps[0, 4:8, 4:8] = 0.05
    maps[1] = 0.97                               # weights everything
    maps[1, 0, 0] = 0.95
    maps[2, 4:10, 3:12] = 1.0                    # an object
    hat = localization.thresholded_maps(maps)
    scores = inference.map_scores(maps, hat, localization.boxes_from_thresholded(hat), 0.95)
    np.testing.assert_array_equal(scores['collapsed'], [True, True, False])
    assert scores['S'][2] == pytest.approx(1.0)
