"""Stage train_f (wsol_jax/stages/train_f.py): f_quality.json records the kept point of each f, which
train_g reads before it trains g."""

import json
import os

import pytest


def test_f_quality_records_the_kept_point_of_each_f_and_where_it_stopped(method1_run):
    workdir, _ = method1_run
    quality = json.load(open(os.path.join(workdir, 'f_quality.json')))
    assert set(quality) == {'f_classifier'}  # Method I with a classifier f
    entry = quality['f_classifier']
    points = json.load(open(os.path.join(workdir, 'f_classifier_history.json')))['points']
    kept = points[str(entry['kept_step'])]
    assert entry['val_accuracy'] == kept['val/accuracy'] == max(p['val/accuracy'] for p in points.values())
    assert entry['kept_epoch'] == kept['epoch'] and entry['last_step'] == max(map(int, points))
    assert entry['chance'] == pytest.approx(0.25) and entry['measure'] == 'top-1'
    assert entry['stopped'] == 'max_epochs'  # the tiny preset: one epoch, no patience
