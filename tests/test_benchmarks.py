"""The benchmark scripts run (tiny sizes on the CPU) and print their numbers."""

import os
import subprocess
import sys

import pytest

from helpers import ROOT


@pytest.mark.slow  # 45-75 s on 2 cores: every section of the GPU check (python -m pytest -m slow)
def test_gpu_check_small_runs_on_cpu_and_writes_every_section(tmp_path):
    out = tmp_path / 'check'
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    proc = subprocess.run(
        ['bash', os.path.join(ROOT, 'benchmarks', 'gpu_check.sh'), str(out), '--small'],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    log = (out / 'gpu_check.txt').read_text()
    for line in (
        'g_method1',
        'g_method2',
        'maps',
        'end to end =',
        'input pipeline alone',
        'MaxBoxAcc contours',
        'synthetic demo end to end',
    ):
        assert line in log, f'{line!r} missing from gpu_check.txt'
    assert (out / 'demo' / 'results.md').exists()


def test_input_memory_benchmark_reports_both_peaks(tmp_path):
    """benchmarks/input_memory.py at tiny sizes: one line per size and the growth of both peaks."""
    proc = subprocess.run(
        [sys.executable, 'benchmarks/input_memory.py', '--sizes=16,48', '--image_size=32', f'--cache_dir={tmp_path}'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith('n=16: build peak') and lines[1].startswith('n=48: build peak')
    assert lines[2].startswith('build: peak') and lines[3].startswith('read: peak') and '%' in lines[3]


def test_f_speed_benchmark_prints_one_line_per_architecture_and_size():
    """benchmarks/f_speed.py on the tiny ViT at 32 px: compile time, ms per batch and per image."""
    proc = subprocess.run(
        [sys.executable, 'benchmarks/f_speed.py', '--archs=vit_tiny_test', '--sizes=32', '--batch=2', '--repeats=1'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith('device: ') and 'batch 2, float32' in lines[0]
    assert len(lines) == 2 and 'vit_tiny_test   32 px: compile' in lines[1] and lines[1].endswith('ms/image')


def test_blackbox_table_gives_each_f_its_median_and_worst_seed():
    """benchmarks/blackbox_seeds.py's table (the runs themselves: `--tiny`, about 90 s): per f the
    median and the lowest GT-known loc and the longest wall time over the seeds that finished;
    a failed seed is one line and counts in neither."""
    module = _benchmark_module('blackbox_seeds')
    run = lambda loc, wall: {'gt_known_loc': loc, 'f_val_accuracy': 0.9, 'wall_s': wall}
    text = module.table(
        {
            'vit': {0: run(0.5, 60), 1: run(0.7, 180), 2: run(0.6, 120)},
            'inline': {0: {'error': 'g does not localise'}, 1: run(0.25, 30)},
        }
    )
    lines = text.splitlines()
    assert '| vit | 1 | 70.0 | 90.0 | 3.0 min |' in lines
    assert '| **vit** | median | 60.0 | | 2.0 min |' in lines and '| **vit** | worst | 50.0 | | 3.0 min |' in lines
    assert '| inline | 0 | failed: g does not localise | | |' in lines
    assert (
        '| **inline** | median | 25.0 | | 0.5 min |' in lines and '| **inline** | worst | 25.0 | | 0.5 min |' in lines
    )
    assert '- inline: a CNN defined in this script, through fit_weight_map; f val accuracy: top-1' in lines


def test_wsoleval_golden_dry_run_gives_the_recorded_commands_with_current_keys():
    """benchmarks/wsoleval_golden.py --dry_run prints the wsol-jax command of each golden set: the
    same flags as tests/golden/wsolevaluation.json records (which made the golden numbers), and each
    `--config.<key>` a key of the config file it names (a retired key, e.g. `f.epochs` or `f.depth`,
    would stop main.py at its first flag)."""
    import json

    from helpers import load_config

    proc = subprocess.run(
        [sys.executable, 'benchmarks/wsoleval_golden.py', '--dry_run'], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = dict(line.split(': ', 1) for line in proc.stdout.strip().splitlines())
    recorded = json.load(open(os.path.join(ROOT, 'tests', 'golden', 'wsolevaluation.json')))['sets']
    assert set(printed) == set(recorded) == {'synthetic', 'openimages'}
    for name, command in printed.items():
        args = command.split()
        assert args[:2] == ['python', 'main.py'] and args[2].startswith('--config=configs/')
        assert sorted(args) == sorted(recorded[name]['wsol_jax_command'].split())  # the flags that made the numbers
        path, _, arg = args[2].split('=', 1)[1].partition(':')
        config = load_config(os.path.splitext(os.path.basename(path))[0], arg)
        keys = [a.split('=', 1)[0][len('--config.') :] for a in args if a.startswith('--config.')]
        assert 'f.max_epochs' in keys and 'g.max_epochs' in keys
        for key in keys:
            node = config
            for part in key.split('.'):
                assert part in node, f'{name}: --config.{key} is not a key of {args[2]}'
                node = node[part]


def _benchmark_module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'benchmarks', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_f_small_data_gives_each_set_its_options_and_each_size_its_median_and_worst():
    """benchmarks/f_small_data.py: the preset's config with the set's options (letters and digits
    are never mirrored), and the table's median and smallest accuracy over seeds."""
    module = _benchmark_module('f_small_data')
    digits = module.preset_config('digit', '/sets/digit_2000', 3)
    assert (digits.data.root, digits.seed, digits.data.flip) == ('/sets/digit_2000', 3, False)
    assert module.preset_config('photo', '/sets/photo', 0).data.flip is True
    results = {
        f'digit/2000/{net}/{s}': {'val_accuracy': a}
        for net, accs in (('f', (0.5, 0.2, 0.4)), ('plain', (0.3, 0.3, 0.1)))
        for s, a in enumerate(accs)
    }
    lines = module.table(results, 'digit', [2000], [0, 1, 2], ['f', 'plain']).splitlines()
    assert lines[-1].split() == ['2000', '0.400', '(0.200)', '0.300', '(0.100)']
