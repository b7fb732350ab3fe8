"""The command line (main.py): every mistake is one line `error: ...` with exit status 2."""

import pytest

from helpers import cli


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
    proc = cli('--config=configs/synthetic.py:method1', f'--workdir={tmp_path}', *args)
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
    proc = cli(f'--config={config}', f'--workdir={tmp_path}', '--config.data.root=/tmp')
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], proc.stderr


def test_cli_unwritable_workdir(tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a directory')
    proc = cli('--config=configs/synthetic.py:method1', f'--workdir={blocker}/run', *TINY)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().startswith('error: cannot write to workdir') and len(proc.stderr.strip().splitlines()) == 1
    )
