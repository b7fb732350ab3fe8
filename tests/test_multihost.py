"""Two processes on this machine (CPU, `jax.distributed` with a localhost coordinator) train and
evaluate the tiny synthetic benchmark together, each feeding its own shard of every batch, and
agree with one process holding the same two devices. Every Orbax call must be made by every
process (it synchronises them), which this test is the guard of."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT

TINY = [
    '--config=configs/synthetic.py:method1,tiny',
    '--config.g.max_epochs=2',
    '--config.eval.num_workers=1',
    # float64: one and two processes differ only in the order of their sums, which moves float64
    # results by ~1e-12 (float32 training amplifies the same reordering to 1e-3..1e-2 within a few
    # steps, see test_parallel.py); boxes and scores then agree to far below the tolerances here.
    '--config.dtype=float64',
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('localhost', 0))
        return s.getsockname()[1]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_COORDINATOR') and k != 'XLA_FLAGS'}
    env.update(JAX_PLATFORMS='cpu', **extra)
    return env


def _two_processes(workdir, *args):
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.join(ROOT, 'main.py'), *TINY, f'--workdir={workdir}', *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(JAX_COORDINATOR_ADDRESS=f'localhost:{port}', JAX_NUM_PROCESSES='2', JAX_PROCESS_ID=str(i)),
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outs]


@pytest.mark.slow  # about 2 minutes on 2 cores: three full runs (python -m pytest -m slow)
def test_two_processes_give_the_results_of_one(tmp_path):
    multi, single = tmp_path / 'multi', tmp_path / 'single'
    outs = _two_processes(multi)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'main.py'), *TINY, f'--workdir={single}'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=_env(XLA_FLAGS='--xla_force_host_platform_device_count=2'),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '2 cpu device(s), 2 host(s)' in outs[0] and '2 cpu device(s), 1 host(s)' in proc.stdout
    # only process 0 writes the reports
    assert '[report]' in outs[0] and '[report]' not in outs[1]
    a, b = (json.load(open(d / 'results.json')) for d in (multi, single))
    assert a['selected_step'] == b['selected_step']
    for variant in b['results']:
        for key, value in b['results'][variant].items():
            np.testing.assert_allclose(a['results'][variant][key], value, atol=1e-6, err_msg=f'{variant}/{key}')
    for epoch, h in b['history'].items():
        np.testing.assert_allclose(a['history'][epoch]['mean_S'], h['mean_S'], atol=1e-9)
    # train_g and evaluate restored f and g from the shared checkpoints in both processes (evaluate
    # restores the selected and the last epoch of g), which the numbers above already check.
