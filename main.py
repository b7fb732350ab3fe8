"""wsol-jax command line: `python main.py --config=configs/synthetic.py:method1 --workdir=DIR`.

Any config field can be overridden (`--config.g.max_epochs=5`); `--stage` runs one stage. Mistakes
(an unknown config key, a value of the wrong type, a missing or damaged checkpoint, a workdir
that cannot be written or is in use by another command) end with one line `error: ...` and exit
status 2; Ctrl-C ends with one line `interrupted: ...` and exit status 130.
"""

import difflib
import functools
import importlib.util
import os
import signal
import sys
import threading

INTERRUPTED = (
    'interrupted: the checkpoints saved so far and the earlier reports are kept; run the same command again to resume'
)

if __name__ == '__mp_main__':
    # The evaluation's worker processes (spawned: they import this file under this name) leave
    # Ctrl-C, which the terminal sends to all of them, to the main process, which stops them;
    # otherwise each one printed its own traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def end_progress_bars() -> None:
    """Close the progress bars that an error or Ctrl-C left open (their `leave=False` clears the
    line), so that the message starts a line of its own."""
    tqdm = sys.modules.get('tqdm')
    for bar in list(getattr(getattr(tqdm, 'tqdm', None), '_instances', ())):
        bar.close()


def interrupted() -> None:
    """Ctrl-C anywhere: one line and exit status 130 (128 + SIGINT), as a shell reports it.

    The stack has unwound (the lock is released, temporary files removed); the process then ends
    at once, as a kill would, which the workdir is made to survive: Python's own shutdown after an
    interrupted XLA compilation crashed (segmentation fault, exit -11) while XLA's threads ran on."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    end_progress_bars()
    try:
        print(INTERRUPTED, file=sys.stderr, flush=True)
        sys.stdout.flush()
    finally:
        os._exit(130)


def keep_interrupts(previous):
    """An unraisable-exception hook: a Ctrl-C that arrives while Python runs a garbage-collection
    callback (JAX registers one) or a finaliser is raised there and lost ("Exception ignored in
    ... KeyboardInterrupt", and the run goes on); it is sent again a moment later instead."""

    def hook(unraisable):
        if isinstance(unraisable.exc_type, type) and issubclass(unraisable.exc_type, KeyboardInterrupt):
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
        else:
            previous(unraisable)

    return hook


try:  # Ctrl-C while the libraries load
    import ml_collections
    from absl import app, flags, logging
    from ml_collections import config_flags

    from wsol_jax import stages
    from wsol_jax.errors import WsolError
except KeyboardInterrupt:
    interrupted()

config_flags.DEFINE_config_file(
    'config', None, 'Config file and argument, e.g. configs/cub.py:method2.', lock_config=True
)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.DEFINE_enum('stage', 'all', ['all', *stages.NAMES], stages.flag_help())
flags.mark_flags_as_required(['config', 'workdir'])
FLAGS = flags.FLAGS


def fail(message: str) -> None:
    end_progress_bars()
    print('error: ' + ' '.join(str(message).replace('\\n', ' ').split()), file=sys.stderr)
    sys.exit(2)


def _config_path(argv) -> str:
    value = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), '')
    return value.split(':')[0]


def _load_config_file(argv):
    """`get_config(arg)` of the file that `--config=path[:arg]` names, as config_flags loads it."""
    value = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), '')
    path, has_arg, arg = value.partition(':')
    spec = importlib.util.spec_from_file_location('wsol_jax_cli_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if has_arg else module.get_config()


def _unknown_key(config, key: str) -> str | None:
    """The error for `--config.<key>` when `key` is no path of `config`, else None."""
    node = config
    for part in key.split('.'):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            choices = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            close = difflib.get_close_matches(part, choices, 1)
            return (
                f'unknown config key --config.{key}'
                + (f' (did you mean "{close[0]}"?)' if close else '')
                + '; the config file lists the valid keys'
            )
        node = node[part]
    return None


def explain_config_error(argv) -> str | None:
    """What is wrong with `--config` or its overrides, found by loading the file and walking each
    override's path (so the message does not depend on the wording of absl's or ml_collections'
    errors); None when the file loads and every key exists (e.g. a value of the wrong type)."""
    path = _config_path(argv)
    if not os.path.isfile(path):
        return (
            f'config file {path!r} not found; give --config=configs/<name>.py:<method>, '
            'e.g. --config=configs/synthetic.py:method1'
        )
    try:
        config = _load_config_file(argv)
    except Exception as e:  # get_config raised: its own message, without the traceback
        return f'{path}: {e}'
    keys = [a[len('--config.') :].split('=')[0] for a in argv[1:] if a.startswith('--config.')]
    return next((m for m in map(functools.partial(_unknown_key, config), keys) if m), None)


def parse_flags(argv):
    """absl's parsing, with config mistakes reported in one line."""
    try:
        args = FLAGS(argv)
        FLAGS.config.method  # a config file that failed to load raises here, not while parsing
        return args
    except (flags.Error, OSError, AttributeError, KeyError, WsolError) as e:
        fail(explain_config_error(argv) or str(e))


def main(argv):
    if len(argv) > 1:
        fail(f'unexpected arguments: {" ".join(argv[1:])}')
    # Orbax and JAX log every checkpoint operation at INFO; keep the console for progress. A failed
    # checkpoint operation is reported in one line below, without Orbax's background tracebacks.
    logging.set_verbosity(logging.WARNING)
    from wsol_jax import parallel, workdir
    from wsol_jax.train import checkpoint

    checkpoint.quiet_orbax()
    try:
        parallel.spread_over_host_cores(FLAGS.config)  # before JAX starts its backends
        parallel.maybe_initialize_distributed(FLAGS.config.distributed)
        from wsol_jax.run import run

        run(FLAGS.config, FLAGS.workdir, FLAGS.stage)
    except WsolError as e:
        fail(e)
    except (OSError, RuntimeError, ValueError) as e:  # a full disk or a refused write no stage named itself
        code = workdir.write_errno(e)
        if code not in workdir.WRITE_ERRNOS:
            raise
        what = e.filename if isinstance(e, OSError) and e.filename else ' '.join(str(e).split())[:300]
        fail(f'{os.strerror(code)}: {what}; free some space or fix the permissions, then run the same command again')


if __name__ == '__main__':
    sys.unraisablehook = keep_interrupts(sys.unraisablehook)
    try:
        app.run(main, flags_parser=parse_flags)
    except KeyboardInterrupt:
        interrupted()
