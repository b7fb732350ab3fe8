"""End to end on a tiny synthetic benchmark: every stage, resume, reports, CLI errors."""

import json
import math
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from helpers import ROOT, load_config, tiny_synthetic
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


def test_selected_point_is_the_latest_within_one_standard_error_of_the_best_mean_s(method1_run):
    workdir, _ = method1_run
    selection = json.load(open(os.path.join(workdir, 'selection.json')))
    history = {int(e): h for e, h in selection['history'].items()}
    scores = {e: h['mean_S'] for e, h in history.items()}
    assert sorted(scores) == [3, 6, 9]
    best = min(e for e, s in scores.items() if s == max(scores.values()))
    n = 16  # validation images of tiny_synthetic
    for h in history.values():  # S is in [0, 1]: its standard deviation is at most 1/2
        assert 0 <= h['mean_S_se'] <= 0.5 * math.sqrt(n / (n - 1)) / math.sqrt(n)
        assert h['mean_S_se'] > 0 or h['mean_S'] in (0.0, 1.0)
    tied = [e for e, s in scores.items() if s >= scores[best] - history[best]['mean_S_se']]
    assert selection['selected_step'] == max(tied) and selection['selected_epoch'] == max(tied) / 3
    assert selection['last_step'] == 9 and selection['last_epoch'] == 3 and selection['box_rule'] == 'normalized'
    assert selection['stopped'] == 'max_epochs'
    assert '1 standard error' in selection['criterion']


def _copy_run(workdir, dest, *names):
    """A new workdir holding some stages of a finished run (default: all of it)."""
    if not names:
        shutil.copytree(workdir, dest)
        return str(dest)
    os.makedirs(dest)
    for name in names:
        src = os.path.join(workdir, name)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(dest, name))
    return str(dest)


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
    copy = _copy_run(workdir, tmp_path / 'w')
    cfg = tiny_synthetic('method1')
    change(cfg)
    with pytest.raises(WorkdirError, match=rf'{key}: .* -> .*use a new --workdir, or --config.overwrite=True'):
        run_lib.run(cfg, copy, 'evaluate')


def test_a_run_whose_kept_maps_are_mostly_degenerate_stops_after_its_report(method1_run, tmp_path):
    """The kept epoch's maps on the validation split are marked 70 % whole-image and 10 %
    collapsed: evaluate writes the report (with its warning) and then stops with one line."""
    workdir, _ = method1_run
    copy = _copy_run(workdir, tmp_path / 'w')
    path = os.path.join(copy, 'selection.json')
    selection = json.load(open(path))
    chosen = selection['history'][str(selection['selected_step'])]
    chosen['val/degenerate'], chosen['val/collapsed'] = 0.7, 0.1
    json.dump(selection, open(path, 'w'))
    os.remove(os.path.join(copy, 'results.md'))
    cfg = tiny_synthetic('method1')
    cfg.eval.max_bad_maps = 0.5
    with pytest.raises(TrainingError, match=r'g does not localise: .* 80% of the validation maps .*max_bad_maps=0.5'):
        run_lib.run(cfg, copy, 'evaluate')
    assert 'Warning' in open(os.path.join(copy, 'results.md')).read()
    cfg.eval.max_bad_maps = 0.8  # at the limit: accepted
    run_lib.run(cfg, copy, 'evaluate')


def test_evaluation_settings_reevaluate_without_retraining(method1_run, tmp_path):
    workdir, _ = method1_run
    copy = _copy_run(workdir, tmp_path / 'w')
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
    copy = _copy_run(workdir, tmp_path / 'w')
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
    copy = _copy_run(workdir, tmp_path / 'w', 'f_classifier', 'f_quality.json', 'fingerprints')
    cfg = tiny_synthetic('method1')
    cfg.g.optimizer.learning_rate = 1e30
    with pytest.raises(
        TrainingError,
        match=r'g: non-finite .* at step \d+ \(epoch \d\.\d+\); nothing of it was '
        r'saved\. Lower config\.g\.optimizer\.learning_rate',
    ):
        run_lib.run(cfg, copy, 'train_g')
    assert not [n for n in os.listdir(os.path.join(copy, 'g')) if n.isdigit()]


def test_a_classifier_at_chance_stops_before_g(method1_run, tmp_path):
    workdir, _ = method1_run
    copy = _copy_run(workdir, tmp_path / 'w', 'f_classifier', 'f_quality.json', 'fingerprints')
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
    copy = _copy_run(workdir, tmp_path / 'w', 'f_classifier', 'f_quality.json', 'fingerprints')
    cfg = tiny_synthetic('method1')
    cfg.f.max_epochs = 2  # f in the workdir has 1 of 2 epochs
    with pytest.raises(
        WorkdirError,
        match=r'f_classifier .* is trained to epoch 1\.00 and not finished under this '
        r'config \(f\.max_epochs=2, f\.patience=0\).*run --stage=train_f first',
    ):
        run_lib.run(cfg, copy, 'train_g')


def test_a_full_disk_while_saving_is_one_clear_error(method1_run, tmp_path, monkeypatch):
    import errno
    from wsol_jax.train import checkpoint

    workdir, _ = method1_run
    copy = _copy_run(workdir, tmp_path / 'w', 'f_classifier', 'f_quality.json', 'fingerprints')

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(checkpoint, 'save', full)
    with pytest.raises(WorkdirError, match=r'no space left .* run the same command again \(it resumes after the last'):
        run_lib.run(tiny_synthetic('method1'), copy, 'train_g')


def test_resume_after_interruption_gives_the_same_selection(method1_run, tmp_path):
    workdir, _ = method1_run
    resumed = _copy_run(workdir, tmp_path / 'resumed', 'f_classifier', 'f_quality.json', 'fingerprints')
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


def _cli(*args):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, 'main.py'), *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


TINY = [
    '--config.data.num_train=16',
    '--config.data.num_val=8',
    '--config.data.num_test=8',
    '--config.data.image_size=32',
    '--config.data.crop_size=32',
    '--config.f.batch_size=8',
    '--config.g.batch_size=8',
]


@pytest.mark.parametrize(
    'args, message',
    [
        (['--config.g.max_epochz=3'], 'unknown config key --config.g.max_epochz (did you mean "max_epochs"?)'),
        (['--config.g.max_epochs=abc'], "--config.g.max_epochs=abc"),
        (['--config.data.crop_size=48'], 'config.data.crop_size: must be divisible by 32'),
        (['--stage=train_g', *TINY], 'no checkpoint of f'),
        (['--config.data.source=bogus'], "config.data.source: unknown source 'bogus'"),
        (['--config.data.num_val=0'], 'config.data.num_val must be at least 1'),
        ([*TINY, '--config.g.batch_size=32'], 'config.g.batch_size=32 is larger than the training split (16 images)'),
        ([*TINY, '--config.g.pretrained=/no/such/file.pth'], 'pretrained weights not found: /no/such/file.pth'),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, message):
    proc = _cli('--config=configs/synthetic.py:method1', f'--workdir={tmp_path}', *args)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], proc.stderr


@pytest.mark.parametrize(
    'config, message',
    [
        ('configs/nope.py:method1', "config file 'configs/nope.py' not found"),
        (
            'configs/synthetic.py:method3',
            "configs/synthetic.py: the config argument must be one of ('method1', 'method2')",
        ),
        (
            'configs/cub.py:method1',
            'f.pretrained: is empty, but this config reproduces the paper only from ImageNet weights',
        ),
    ],
)
def test_cli_config_file_errors_are_one_line(tmp_path, config, message):
    proc = _cli(f'--config={config}', f'--workdir={tmp_path}', '--config.data.root=/tmp')
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], proc.stderr


def test_cli_unwritable_workdir(tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a directory')
    proc = _cli('--config=configs/synthetic.py:method1', f'--workdir={blocker}/run', *TINY)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().startswith('error: cannot write to workdir') and len(proc.stderr.strip().splitlines()) == 1
    )


def test_cub_config_runs_every_stage_on_the_cub_fixture(tmp_path):
    """`main.py --config=configs/cub.py:method1 --config.data.root=FIXTURE`: the real CUB loader,
    decode cache, all stages, report (sizes shrunk for the CPU)."""
    import fixtures

    root = tmp_path / 'CUB_200_2011'
    fixtures.write_cub(root, num_classes=3, per_class=8)
    workdir = tmp_path / 'run'
    proc = _cli(
        '--config=configs/cub.py:method1',
        f'--config.data.root={root}',
        f'--workdir={workdir}',
        '--config.data.image_size=40',
        '--config.data.crop_size=32',
        '--config.data.num_val=4',
        '--config.data.num_classes=0',
        '--config.f.width=0.125',
        '--config.f.max_epochs=1',
        '--config.f.batch_size=4',
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
