import os
import sys
import tempfile

# Tests run on the CPU. XLA compilation dominates their time, so compiled programs are shared
# through JAX's persistent cache: tests (and the subprocesses they start) that build the same
# models reuse them instead of compiling again.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(tempfile.gettempdir(), 'wsol_jax_test_xla_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


import pytest  # noqa: E402


@pytest.fixture(scope='session')
def method1_run(tmp_path_factory):
    """One tiny Method I run through every stage, shared by the modules that use a trained run
    (tests that change it work on a copy)."""
    from helpers import tiny_synthetic
    from wsol_jax import run as run_lib
    workdir = str(tmp_path_factory.mktemp('m1'))
    results = run_lib.run(tiny_synthetic('method1'), workdir)
    return workdir, results
