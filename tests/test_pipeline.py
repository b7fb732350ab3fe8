"""End to end on a tiny synthetic benchmark: every stage, resume, reports, CLI errors."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import ROOT, tiny_synthetic
from wsol_jax import run as run_lib
from wsol_jax.errors import WorkdirError


@pytest.fixture(scope='module')
def method1_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp('m1'))
    results = run_lib.run(tiny_synthetic('method1'), workdir)
    return workdir, results


def test_all_stages_write_results(method1_run):
    workdir, results = method1_run
    assert set(results) == {'weight_map_selected', 'weight_map_last', 'cam'}
    for variant in results.values():
        assert set(variant) >= {'gt_known_loc', 'top1_loc', 'top1_cls', 'pxap', 'maxboxacc_v2'}
        assert all(0.0 <= v <= 1.0 for v in variant.values())
        assert variant['top1_loc'] <= min(variant['gt_known_loc'], variant['top1_cls'])
    for name in ('results.json', 'results.md', 'selection.png', 'overlays.png', 'strip.png', 'selection.json'):
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    record = json.load(open(os.path.join(workdir, 'results.json')))
    assert record['config']['g']['epochs'] == 3 and record['versions']['jax']
    assert set(record['timings_s']) == {'train_f', 'train_g', 'select', 'evaluate'}
    assert os.listdir(os.path.join(workdir, 'tensorboard'))


def test_method2_runs_every_stage(tmp_path):
    """Method II: Siamese f (triplet loss), g with Eq. 3 + 4, and the classifier for Top-1."""
    cfg = tiny_synthetic('method2', g_epochs=2)
    cfg.g.batch_size = 8
    results = run_lib.run(cfg, str(tmp_path))
    assert os.path.isdir(tmp_path / 'f_siamese') and os.path.isdir(tmp_path / 'f_classifier')
    assert all(0.0 <= v <= 1.0 for r in results.values() for v in r.values())
    history = json.load(open(tmp_path / 'selection.json'))['history']
    assert {'train/inner', 'train/outer', 'train/reg', 'mean_S'} <= set(history['1'])


def test_selected_epoch_maximises_mean_s(method1_run):
    workdir, _ = method1_run
    selection = json.load(open(os.path.join(workdir, 'selection.json')))
    scores = {int(e): h['mean_S'] for e, h in selection['history'].items()}
    assert sorted(scores) == [1, 2, 3]
    assert scores[selection['selected_epoch']] == max(scores.values())
    assert selection['last_epoch'] == 3


def test_resume_after_interruption_gives_the_same_selection(method1_run, tmp_path):
    workdir, _ = method1_run
    resumed = str(tmp_path / 'resumed')
    os.makedirs(resumed)
    shutil.copytree(os.path.join(workdir, 'f_classifier'), os.path.join(resumed, 'f_classifier'))
    # "Interrupted" after the first epoch of g, then the same command again with the full length.
    run_lib.run(tiny_synthetic('method1', g_epochs=1), resumed, 'train_g')
    run_lib.run(tiny_synthetic('method1'), resumed, 'train_g')
    run_lib.run(tiny_synthetic('method1'), resumed, 'select')
    a = json.load(open(os.path.join(workdir, 'selection.json')))
    b = json.load(open(os.path.join(resumed, 'selection.json')))
    assert a['selected_epoch'] == b['selected_epoch']
    for epoch in ('1', '2', '3'):
        assert b['history'][epoch]['mean_S'] == pytest.approx(a['history'][epoch]['mean_S'], abs=1e-5)


def test_evaluate_without_checkpoints_is_a_clear_error(tmp_path):
    with pytest.raises(WorkdirError, match='run --stage=select first'):
        run_lib.run(tiny_synthetic('method1'), str(tmp_path), 'evaluate')
    with pytest.raises(WorkdirError, match=r'no checkpoint of f .*run the stage that trains it'):
        run_lib.run(tiny_synthetic('method1'), str(tmp_path), 'train_g')


def _cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


TINY = ['--config.data.num_train=16', '--config.data.num_val=8', '--config.data.num_test=8',
        '--config.data.image_size=32', '--config.data.crop_size=32', '--config.f.batch_size=8',
        '--config.g.batch_size=8']


@pytest.mark.parametrize('args, message', [
    (['--config.g.epochz=3'], 'unknown config key --config.g.epochz (did you mean "epochs"?)'),
    (['--config.g.epochs=abc'], "--config.g.epochs=abc"),
    (['--config.data.crop_size=48'], 'config.data.crop_size: must be divisible by 32'),
    (['--stage=train_g', *TINY], 'no checkpoint of f'),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    proc = _cli('--config=configs/synthetic.py:method1', f'--workdir={tmp_path}', *args)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], proc.stderr


def test_cli_unwritable_workdir(tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a directory')
    proc = _cli('--config=configs/synthetic.py:method1', f'--workdir={blocker}/run', *TINY)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith('error: cannot write to workdir') and len(proc.stderr.strip().splitlines()) == 1


def test_cub_config_runs_every_stage_on_the_cub_fixture(tmp_path):
    """`main.py --config=configs/cub.py:method1 --config.data.root=FIXTURE`: the real CUB loader,
    decode cache, all stages, report (sizes shrunk for the CPU)."""
    import fixtures
    root = tmp_path / 'CUB_200_2011'
    fixtures.write_cub(root, num_classes=3, per_class=8)
    workdir = tmp_path / 'run'
    proc = _cli('--config=configs/cub.py:method1', f'--config.data.root={root}', f'--workdir={workdir}',
                '--config.data.image_size=40', '--config.data.crop_size=32', '--config.data.num_val=4',
                '--config.data.num_classes=0', '--config.f.width=0.125', '--config.f.epochs=1',
                '--config.f.batch_size=4', '--config.g.width=0.125', '--config.g.epochs=2',
                '--config.g.batch_size=4', '--config.eval.batch_size=4')
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.load(open(workdir / 'results.json'))
    assert record['config']['data']['source'] == 'cub'
    assert 'pxap' in record['results']['weight_map_selected']   # CUB segmentations were read
    assert os.listdir(workdir / 'data_cache')
