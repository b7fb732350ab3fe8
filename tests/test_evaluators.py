"""The evaluators (wsol_jax/evaluators/): the config chooses them, the default reproduces the rows
the evaluation always had (names, titles, overlay columns, protocol lines), a new evaluator is
one module and one registry entry, the validation row is what train_g recorded, and the saved
scoremaps read back as wsolevaluation reads them give the wsolevaluation row."""

import os
import shutil
import sys
import types

import numpy as np
import pytest

from helpers import tiny_synthetic
from wsol_jax import config as config_lib, evaluators, inference, methods, metrics, parallel, report, run as run_lib
from wsol_jax import workdir as workdir_lib, wsolevaluation
from wsol_jax.context import Context, g_setup, restore_g
from wsol_jax.data import load_dataset
from wsol_jax.errors import ConfigError
from wsol_jax.evaluators import validation
from wsol_jax.evaluators.common import Bench, Evaluator, Row
from wsol_jax.selection import load_selection


def test_the_default_rows_and_what_the_report_calls_them():
    c = config_lib.base_config('method1')
    assert evaluators.names(c, {}) == ('weight_map_selected', 'weight_map_last', 'cam')
    c.eval.save_maps = True
    assert evaluators.names(c, {})[-1] == 'weight_map_selected_wsolevaluation'
    assert evaluators.names(c, {'cam': 'a ViT'}) == (
        'weight_map_selected',
        'weight_map_last',
        'weight_map_selected_wsolevaluation',
    )
    assert {n: evaluators.title(n) for n in evaluators.EVALUATORS} == {
        'weight_map_selected': 'weight map g, point selected by S',
        'weight_map_last': 'weight map g, last point',
        'cam': 'CAM of f (baseline)',
        'weight_map_selected_wsolevaluation': 'weight map g, point selected by S, wsolevaluation protocol '
        '(whole image at 224, saved scoremaps)',
    }
    assert {n: e.overlay for n, e in evaluators.EVALUATORS.items() if e.overlay} == {
        'weight_map_selected': 'g (selected)',
        'weight_map_last': 'g (last)',
        'cam': 'CAM',
    }
    built = evaluators.from_config(c, {})
    assert [(e.name, type(e).__module__) for e in built] == [
        ('weight_map_selected', 'wsol_jax.evaluators.weight_map'),
        ('weight_map_last', 'wsol_jax.evaluators.weight_map'),
        ('cam', 'wsol_jax.evaluators.cam'),
        ('weight_map_selected_wsolevaluation', 'wsol_jax.evaluators.scoremaps'),
    ]
    assert [e.point for e in built[:2]] == ['selected', 'last']
    # the protocol names CAM only where f defines it, and wsolevaluation's protocol always
    lines = '\n'.join(report.protocol(c))
    assert '- CAM: class activation maps' in lines and '- wsolevaluation protocol' in lines
    c.f.arch = 'vit_cpu8'
    assert '- CAM:' not in '\n'.join(report.protocol(c)) and 'cam' in methods.not_defined(c)


def test_the_config_names_registered_evaluators_only():
    c = config_lib.base_config('method1')
    c.eval.evaluators = ('weight_map_selected', 'gradcam')
    with pytest.raises(ConfigError, match=r"^config.eval.evaluators: must name one or more of .*'gradcam'"):
        config_lib.validate_training(c)
    c.eval.evaluators = ('weight_map_selected_wsolevaluation',)
    with pytest.raises(ConfigError, match=r'eval.save_maps=True adds weight_map_selected_wsolevaluation'):
        config_lib.validate_training(c)
    c.eval.evaluators = ()
    with pytest.raises(ConfigError, match=r'^config.eval.evaluators'):
        config_lib.validate_training(c)
    c.eval.evaluators = ('cam', 'weight_map_last')  # any order: the rows' order
    config_lib.validate_training(c)
    assert evaluators.names(c, {}) == ('cam', 'weight_map_last')


def test_a_new_evaluator_is_one_module_and_one_entry(monkeypatch):
    module = types.ModuleType('wsol_jax.evaluators.constant')

    class Constant(Evaluator):
        def __init__(self, name, value):
            super().__init__(name)
            self.value = value

        def run(self, bench):
            yield Row(self.name, {'gt_known_loc': self.value})

    module.Evaluator = Constant
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(
        evaluators.EVALUATORS, 'constant', evaluators.Entry('constant', 'a constant', options=(('value', 0.5),))
    )
    c = config_lib.base_config('method1')
    c.eval.evaluators = ('weight_map_selected', 'constant')
    config_lib.validate_training(c)
    (made,) = [e for e in evaluators.from_config(c, {}) if e.name == 'constant']
    (row,) = made.run(None)
    selection = {'selected_step': 3, 'selected_epoch': 1.0, 'last_epoch': 3.0, 'criterion': 'S', 'history': {}}
    table = report.markdown_table({row.name: row.metrics}, selection)
    assert '| a constant | 50.00 |' in table


def test_the_validation_row_is_what_train_g_recorded(method1_run):
    """The validation evaluator on the selected point gives the numbers of that point in
    g_history.json (the evaluator train_g scored it with)."""
    workdir, _ = method1_run
    cfg = tiny_synthetic('method1')
    ctx = Context(cfg, workdir, load_dataset(cfg), parallel.make_mesh())
    g_model, g_state, _ = g_setup(ctx, abstract=True)
    selection = load_selection(workdir)
    step = selection['selected_step']
    g_vars = restore_g(ctx, g_state, step)
    map_fn = inference.compile_weight_maps(g_model, ctx.crop, cfg.eval)
    bench = Bench(ctx, ctx.data.val, lambda point: g_vars, g_model, map_fn)
    (row,) = validation.Evaluator(validation.NAME).run(bench)
    recorded = selection['history'][str(step)]
    assert row.name == 'validation' and row.samples['maps'].shape == (cfg.eval.strip_images, 32, 32)
    assert set(row.metrics) == {k for k in recorded if k != 'epoch' and not k.startswith('train/')}
    for key, value in row.metrics.items():
        assert value == pytest.approx(recorded[key], abs=1e-6), key
    strip = np.load(f'{workdir}/strip/step_{step:07d}.npy')
    np.testing.assert_array_equal((row.samples['maps'] * 255).round().astype(np.uint8), strip)


def test_saved_scoremaps_read_back_give_the_same_numbers(method1_run, tmp_path):
    """eval.save_maps on the synthetic set (no files of its own): the .npy files and the metadata
    and masks written beside them, read as clovaai/wsolevaluation's evaluation.py reads them
    (tests/helpers.py), give exactly the numbers of the in-memory pass through our metrics."""
    from helpers import read_wsolevaluation_ground_truth

    workdir = str(tmp_path / 'w')
    shutil.copytree(method1_run[0], workdir)
    cfg = tiny_synthetic('method1')
    cfg.eval.save_maps = True
    cfg.eval.num_workers = 2  # the worker-process path of MaxBoxAcc
    results = run_lib.run(cfg, workdir, stage='evaluate')
    in_memory = results['weight_map_selected_wsolevaluation']
    split = load_dataset(cfg).test
    ids, boxes, masks = read_wsolevaluation_ground_truth(
        os.path.join(workdir, workdir_lib.WSOLEVAL_METADATA), os.path.join(workdir, workdir_lib.WSOLEVAL_MASKS)
    )
    assert ids == split.names == [f'test_{i:05d}' for i in range(len(split))]  # the generated ids
    for i, image_id in enumerate(ids):  # 32 px boxes and masks at 224: x 7
        np.testing.assert_array_equal(boxes[image_id], split.boxes[i] * 7)
        np.testing.assert_array_equal(masks[image_id], np.kron(split.masks[i], np.ones((7, 7), np.uint8)))
    maps = np.stack(
        [np.load(wsolevaluation.scoremap_path(os.path.join(workdir, workdir_lib.SCOREMAPS), i)) for i in ids]
    )
    assert maps.shape == (len(split), 224, 224) and maps.dtype == np.float32
    assert (maps.min(axis=(1, 2)) == 0).all() and (maps.max(axis=(1, 2)) == 1).all()
    acc = metrics.MaxBoxAccAccumulator(cfg.eval.pxap_interval, tuple(cfg.eval.maxboxacc_ious))
    acc.update(maps, [boxes[i] for i in ids])
    read_back = {**acc.result(), 'pxap': metrics.pxap(maps, np.stack([masks[i] for i in ids]), cfg.eval.pxap_interval)}
    assert read_back == in_memory
    md = open(os.path.join(workdir, 'results.md')).read()
    assert 'How each number was obtained' in md and 'wsolevaluation protocol' in md
