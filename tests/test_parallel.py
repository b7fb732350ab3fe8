"""Data parallelism: 8 (fake CPU) devices give the same training as 1 device with the same global
batch, for f and g in both methods and for g with a ViT f inside its objective, up to float64
rounding; BatchNorm statistics are those of the global batch (with per-device statistics, here
over one image each, the running means would differ)."""

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT


@pytest.fixture(scope='module')
def differences():
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'tests', 'multidevice_check.py')],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# The check runs in float64 (multidevice_check.py), where the one- and the eight-device programs
# differ only in the order of their floating-point sums. Why the tolerance is 2**-29 (1.9e-9),
# relative to each tensor's scale: reordering a sum perturbs it by about the unit roundoff u, and
# two training steps amplify that perturbation by some factor A, the same in any precision (it
# is a property of the program: a normalisation over one channel, a near-zero variance). In
# float32 (u = 2**-24) the relative difference A * 2**-24 cannot exceed 1 while the runs stay
# comparable at all, so A <= 2**24, and in float64 (u = 2**-53) rounding alone moves the results
# by at most A * 2**-53 <= 2**-29. A difference above it is not rounding: per-device BatchNorm
# statistics or a gradient averaged per device give 1e-3 to 1e-1. (Measured on this project's
# CPU machine: at most 1.5e-11 in float64, Method II's g, 8.4e-13 for g with the ViT f; in
# float32 the same two steps of 8 examples differ by 1.7e-5 to 6.8e-4, which is the
# amplification A ~ 1e4 at work, not a bug.)
TOLERANCE = 2.0**-29


@pytest.mark.parametrize('kind', ['f_classifier', 'f_triplet', 'g_method1', 'g_method2', 'g_method1_vit'])
def test_eight_devices_match_one(differences, kind):
    assert differences[kind]['params'] < TOLERANCE, differences[kind]
    assert differences[kind]['batch_stats'] < TOLERANCE, differences[kind]


def test_batch_size_must_divide_devices():
    import jax
    from wsol_jax import parallel

    mesh = parallel.make_mesh()
    parallel.check_batch_size(jax.device_count() * 4, mesh, 'config.g.batch_size')
    if jax.device_count() > 1:
        with pytest.raises(ValueError, match='divisible'):
            parallel.check_batch_size(jax.device_count() * 4 + 1, mesh, 'config.g.batch_size')


def test_a_cpu_run_gets_one_device_per_core_that_divides_its_batches(monkeypatch):
    import ml_collections
    from wsol_jax import parallel

    assert parallel.host_device_count((32, 16, 128, 32), cores=2) == 2
    assert parallel.host_device_count((32, 16, 128, 32), cores=6) == 4  # 6, 5 do not divide 16
    assert parallel.host_device_count((30, 45), cores=4) == 3
    assert parallel.host_device_count((7,), cores=4) == 1
    cfg = ml_collections.ConfigDict(
        dict(
            distributed=False,
            cpu_devices=0,
            f={'batch_size': 32},
            g={'batch_size': 16},
            eval={'batch_size': 128},
            predict={'batch_size': 32},
        )
    )
    from jax._src import xla_bridge

    monkeypatch.setattr(xla_bridge, 'backends_are_initialized', lambda: False)
    monkeypatch.setattr(parallel.os, 'sched_getaffinity', lambda pid: {0, 1})
    monkeypatch.delenv('JAX_COORDINATOR_ADDRESS', raising=False)
    monkeypatch.setenv('XLA_FLAGS', '--xla_foo=1')
    assert parallel.spread_over_host_cores(cfg) == 2
    assert parallel.os.environ['XLA_FLAGS'] == '--xla_foo=1 --xla_force_host_platform_device_count=2'
    assert parallel.spread_over_host_cores(cfg) == 0  # a device count already set is kept
    monkeypatch.setenv('XLA_FLAGS', '')
    cfg.cpu_devices = 1  # pinned to one device on purpose
    assert parallel.spread_over_host_cores(cfg) == 1
    monkeypatch.setenv('XLA_FLAGS', '')
    monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', 'host0:1234')  # a multi-host run: left alone
    assert parallel.spread_over_host_cores(cfg) == 0 and parallel.os.environ['XLA_FLAGS'] == ''
