"""wsol_jax/run.py end to end on the tiny synthetic benchmark: every stage through the table, results,
reused workdirs, re-evaluation, overwrite, resume, faults while training, a CUB-layout run from the CLI."""

import json
import os

import jax
import numpy as np
import pytest

from helpers import cli, copy_run, load_config, tiny_synthetic
from wsol_jax import parallel, run as run_lib
from wsol_jax.context import Context, f_setup, frozen_f
from wsol_jax.data import load_dataset
from wsol_jax.errors import TrainingError, WorkdirError


def test_all_stages_write_results(method1_run):
    workdir, results = method1_run
    assert set(results) == {'weight_map_selected', 'weight_map_last', 'cam'}
    for variant in results.values():
        assert set(variant) >= {
            'gt_known_loc',
            'top1_loc',
            'top1_cls',
            'top5_loc',
            'top5_cls',
            'pxap',
            'maxboxacc_v1',
            'maxboxacc_v2',
        }
        assert all(0.0 <= v <= 1.0 for v in variant.values())
        assert variant['top1_loc'] <= min(variant['gt_known_loc'], variant['top1_cls'])
    for name in ('results.json', 'results.md', 'selection.png', 'overlays.png', 'strip.png', 'selection.json'):
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    record = json.load(open(os.path.join(workdir, 'results.json')))
    assert record['config']['g']['max_epochs'] == 3 and record['versions']['jax']
    assert set(record['timings_s']) == {'train_f', 'train_g', 'select', 'evaluate'}
    assert record['f_quality']['f_classifier']['chance'] == pytest.approx(0.25)
    assert 'regret' in record['selection_regret']  # the validation split has boxes
    assert 'regret' in open(os.path.join(workdir, 'results.md')).read()
    assert os.listdir(os.path.join(workdir, 'tensorboard'))


def test_only_the_selected_and_the_latest_point_stay_on_disk(method1_run):
    workdir, _ = method1_run
    selection = json.load(open(os.path.join(workdir, 'selection.json')))
    kept = {int(n) for n in os.listdir(os.path.join(workdir, 'g')) if n.isdigit()}
    assert kept == {selection['selected_step'], 9}  # 3 epochs of 3 steps, S once an epoch
    assert sorted(json.load(open(os.path.join(workdir, 'g_history.json')))['points'], key=int) == ['3', '6', '9']


def test_method2_runs_every_stage(tmp_path):
    """Method II: Siamese f (triplet loss), g with Eq. 3 + 4, and the classifier for Top-1."""
    cfg = tiny_synthetic('method2', g_epochs=2)
    cfg.g.batch_size = 8
    cfg.g.optimizer.learning_rate = 1e-4  # two tiny epochs saturate the map at 1 with the default rate
    cfg.f.max_epochs = 2
    assert cfg.f.siamese_from_classifier
    results = run_lib.run(cfg, str(tmp_path))
    assert os.path.isdir(tmp_path / 'f_siamese') and os.path.isdir(tmp_path / 'f_classifier')
    assert all(0.0 <= v <= 1.0 for r in results.values() for v in r.values())
    history = json.load(open(tmp_path / 'selection.json'))['history']
    assert {'train/inner', 'train/outer', 'train/reg', 'mean_S'} <= set(history['6'])  # batch 8: 6 steps an epoch
    assert sorted(json.load(open(tmp_path / 'f_siamese_history.json'))['points'], key=int) == ['3', '6']

    # The Siamese f starts from the trained classifier's backbone (statistics included), with a
    # fresh embedding head; from scratch it would start from the random initialisation.
    ctx = Context(cfg, str(tmp_path), load_dataset(cfg), parallel.make_mesh())
    _, classifier = frozen_f(ctx, 'f_classifier')
    _, start, _ = f_setup(ctx, 'f_siamese')
    same = lambda a, b: all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), a, b)))
    assert same(start.params['backbone'], classifier['params']['backbone'])
    assert same(start.batch_stats['backbone'], classifier['batch_stats']['backbone'])
    assert start.params['head']['kernel'].shape[-1] == cfg.f.embed_dim
    cfg.f.siamese_from_classifier = False
    _, scratch, _ = f_setup(ctx, 'f_siamese')
    assert not same(scratch.params['backbone'], classifier['params']['backbone'])


@pytest.mark.parametrize(
    'change, key',
    [
        (lambda c: setattr(c, 'method', 'method2'), 'method'),
        (lambda c: setattr(c, 'seed', 1), 'seed'),
        (lambda c: c.data.update({'num_train': 40}), 'data.num_train'),
        (lambda c: c.g.update({'width': 0.25}), 'g.width'),
        (lambda c: c.f.update({'max_epochs': 2}), 'f.max_epochs'),  # g was trained with another f
    ],
)
def test_reused_workdir_with_other_settings_stops_and_names_the_key(method1_run, tmp_path, change, key):
    workdir, _ = method1_run
    copy = copy_run(workdir, tmp_path / 'w')
    cfg = tiny_synthetic('method1')
    change(cfg)
    with pytest.raises(WorkdirError, match=rf'{key}: .* -> .*use a new --workdir, or --config.overwrite=True'):
        run_lib.run(cfg, copy, 'evaluate')


def test_evaluation_settings_reevaluate_without_retraining(method1_run, tmp_path):
    workdir, _ = method1_run
    copy = copy_run(workdir, tmp_path / 'w')
    before = sorted(os.listdir(os.path.join(copy, 'g')))
    cfg = tiny_synthetic('method1')
    cfg.eval.num_overlays = 1
    cfg.eval.pxap_interval = 0.02
    run_lib.run(cfg, copy)  # every stage: nothing to train, it evaluates again
    assert sorted(os.listdir(os.path.join(copy, 'g'))) == before
    timings = json.load(open(os.path.join(copy, 'timings.json')))
    assert len(timings['runs']) == 2  # accumulated over invocations
    assert timings['total_s']['evaluate'] == pytest.approx(
        sum(r['seconds']['evaluate'] for r in timings['runs']), abs=0.2
    )


def test_overwrite_retrains_from_the_changed_stage_and_keeps_all_points_on_request(method1_run, tmp_path):
    workdir, _ = method1_run
    copy = copy_run(workdir, tmp_path / 'w')
    f_files = sorted(os.listdir(os.path.join(copy, 'f_classifier')))
    cfg = tiny_synthetic('method1')
    cfg.g.reg_weight = 0.5
    cfg.g.keep_all_checkpoints = True
    cfg.overwrite = True
    run_lib.run(cfg, copy, 'train_g')
    assert sorted(os.listdir(os.path.join(copy, 'f_classifier'))) == f_files  # f untouched
    assert sorted((n for n in os.listdir(os.path.join(copy, 'g')) if n.isdigit()), key=int) == ['3', '6', '9']
    assert not os.path.exists(os.path.join(copy, 'results.json'))  # stale results removed
    assert json.load(open(os.path.join(copy, 'fingerprints', 'g.json')))['g.reg_weight'] == 0.5


def test_non_finite_loss_stops_and_saves_nothing(method1_run, tmp_path):
    workdir, _ = method1_run
    copy = copy_run(workdir, tmp_path / 'w', 'f_classifier', 'f_quality.json', 'fingerprints')
    cfg = tiny_synthetic('method1')
    cfg.g.optimizer.learning_rate = 1e30
    with pytest.raises(
        TrainingError,
        match=r'g: non-finite .* at step \d+ \(epoch \d\.\d+\); nothing of it was '
        r'saved\. Lower config\.g\.optimizer\.learning_rate',
    ):
        run_lib.run(cfg, copy, 'train_g')
    assert not [n for n in os.listdir(os.path.join(copy, 'g')) if n.isdigit()]


def test_a_full_disk_while_saving_is_one_clear_error(method1_run, tmp_path, monkeypatch):
    import errno
    from wsol_jax.train import checkpoint

    workdir, _ = method1_run
    copy = copy_run(workdir, tmp_path / 'w', 'f_classifier', 'f_quality.json', 'fingerprints')

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(checkpoint, 'save', full)
    with pytest.raises(WorkdirError, match=r'no space left .* run the same command again \(it resumes after the last'):
        run_lib.run(tiny_synthetic('method1'), copy, 'train_g')


def test_resume_after_interruption_gives_the_same_selection(method1_run, tmp_path):
    workdir, _ = method1_run
    resumed = copy_run(workdir, tmp_path / 'resumed', 'f_classifier', 'f_quality.json', 'fingerprints')
    # "Interrupted" after the first epoch of g, then the same command again with the full length.
    run_lib.run(tiny_synthetic('method1', g_epochs=1), resumed, 'train_g')
    run_lib.run(tiny_synthetic('method1'), resumed, 'train_g')
    run_lib.run(tiny_synthetic('method1'), resumed, 'select')
    a = json.load(open(os.path.join(workdir, 'selection.json')))
    b = json.load(open(os.path.join(resumed, 'selection.json')))
    assert a['selected_step'] == b['selected_step']
    for step in ('3', '6', '9'):
        assert b['history'][step]['mean_S'] == pytest.approx(a['history'][step]['mean_S'], abs=1e-5)


def test_evaluate_without_checkpoints_is_a_clear_error(tmp_path):
    with pytest.raises(WorkdirError, match='run --stage=select first'):
        run_lib.run(tiny_synthetic('method1'), str(tmp_path), 'evaluate')
    with pytest.raises(WorkdirError, match=r'no checkpoint of f .*run the stage that trains it'):
        run_lib.run(tiny_synthetic('method1'), str(tmp_path), 'train_g')


def test_cub_config_runs_every_stage_on_the_cub_fixture(tmp_path):
    """`main.py --config=configs/cub.py:method1 --config.data.root=FIXTURE`: the real CUB loader,
    decode cache, all stages, report (sizes and networks shrunk for the CPU)."""
    import fixtures

    root = tmp_path / 'CUB_200_2011'
    fixtures.write_cub(root, num_classes=3, per_class=8)
    workdir = tmp_path / 'run'
    proc = cli(
        '--config=configs/cub.py:method1',
        f'--config.data.root={root}',
        f'--workdir={workdir}',
        '--config.data.image_size=40',
        '--config.data.crop_size=32',
        '--config.data.num_val=4',
        '--config.data.num_classes=0',
        '--config.f.arch=resnet_tiny_test',  # the tiny preset's networks: the loader is what is tested
        '--config.f.width=0.125',
        '--config.f.max_epochs=1',
        '--config.f.batch_size=4',
        '--config.g.depth=resnet_tiny_test',
        '--config.g.width=0.125',
        '--config.g.max_epochs=2',
        '--config.g.batch_size=4',
        '--config.eval.batch_size=4',
        '--config.f.pretrained=none',
        '--config.g.pretrained=none',
        '--config.f.allow_weak=True',
        '--config.eval.max_coverage=1.0',
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.load(open(workdir / 'results.json'))
    assert record['config']['data']['source'] == 'cub'
    assert 'pxap' in record['results']['weight_map_selected']  # CUB segmentations were read
    assert os.listdir(workdir / 'data_cache')


def test_a_test_split_without_boxes_stops_before_training_and_names_the_file(tmp_path):
    import fixtures
    from wsol_jax.errors import DataError

    root = tmp_path / 'mine'
    fixtures.write_wsolevaluation(root, num_classes=2, per_split=4)
    loc = root / 'metadata' / 'test' / 'localization.txt'
    loc.write_text('')
    cfg = load_config('custom', 'method1')
    cfg.data.update(dict(root=str(root), image_size=32, crop_size=32))
    cfg.f.batch_size = cfg.g.batch_size = cfg.eval.batch_size = 2
    with pytest.raises(DataError, match=rf'the test split has no boxes or masks \({loc} is missing or empty\)'):
        run_lib.run(cfg, str(tmp_path / 'run'))
    assert not os.path.exists(tmp_path / 'run' / 'f_classifier')
