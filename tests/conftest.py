import os
import sys
import tempfile

# Tests run on the CPU. XLA compilation dominates their time, so compiled programs are shared
# through JAX's persistent cache: tests (and the subprocesses they start) that build the same
# models reuse them instead of compiling again.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(tempfile.gettempdir(), 'wsol_jax_test_xla_cache'))
# At optimisation level 0 (below) the evaluation's programs compile in 0.1-0.5 s: cached too, every
# tiny run makes the same ones.
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.1')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
# XLA's CPU backend spends most of a compile in LLVM's optimisation passes (compiling the tiny
# networks' initialisation: 11.6 s at the default level, 2.1 s at 0; a train step of g: 5.3 s and
# 3.0 s); the tests' programs run on a few images, where the unoptimised code's speed does not
# matter. The level changes the machine code and with it the last bits of some results (float32
# roundings: the blank-weight test in test_steps.py follows another path), not what is computed:
# the float64 parity checks hold as before. Set XLA_FLAGS with a level of your own to test at it.
if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0').strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


import pytest  # noqa: E402


@pytest.fixture(scope='session')
def method1_run(tmp_path_factory):
    """One tiny Method I run through every stage, shared by the modules that use a trained run
    (tests that change it work on a copy). Under pytest-xdist the run is made once, by the first
    worker that needs it, in the temporary folder all workers share; the others wait and read it."""
    import fcntl
    import json
    from helpers import tiny_synthetic
    from wsol_jax import run as run_lib

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'):
        shared = shared.parent
    workdir, lock = shared / 'method1_run', shared / 'method1_run.lock'
    with open(lock, 'w') as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        done = workdir / 'results.json'
        if not done.exists():
            run_lib.run(tiny_synthetic('method1'), str(workdir))
        results = json.load(open(done))['results']
    return str(workdir), results


@pytest.fixture(scope='session')
def localizer(method1_run):
    """The localiser of the shared tiny Method I run (its selected point), built and compiled once per
    worker for the modules that use it (test_localizer, test_export, test_predict); no test changes it."""
    from wsol_jax.localizer import Localizer

    return Localizer.from_workdir(method1_run[0], batch_size=8)


@pytest.fixture(scope='session')
def test_split(method1_run):
    """The test split of the shared tiny Method I run."""
    from helpers import tiny_synthetic
    from wsol_jax.data import load_dataset

    return load_dataset(tiny_synthetic('method1')).test
