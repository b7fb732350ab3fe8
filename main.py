"""wsol-jax command line: `python main.py --config=configs/synthetic.py:method1 --workdir=DIR`.

Any config field can be overridden (`--config.g.epochs=5`); `--stage` runs one stage. Mistakes
(an unknown config key, a value of the wrong type, a missing checkpoint, a workdir that cannot be
written) end with one line `error: ...` and exit status 2.
"""
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from wsol_jax.errors import WsolError

config_flags.DEFINE_config_file('config', None, 'Config file and argument, e.g. configs/cub.py:method2.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.DEFINE_enum('stage', 'all', ['all', 'train_f', 'train_g', 'select', 'evaluate', 'export', 'predict'],
                  'Run every training stage (all) or only one; export and predict use a trained run.')
flags.mark_flags_as_required(['config', 'workdir'])
FLAGS = flags.FLAGS


def fail(message: str) -> None:
    print('error: ' + ' '.join(str(message).replace('\\n', ' ').split()), file=sys.stderr)
    sys.exit(2)


def _config_path(argv) -> str:
    value = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), '')
    return value.split(':')[0]


def parse_flags(argv):
    """absl's parsing, with config mistakes reported in one line."""
    try:
        args = FLAGS(argv)
        FLAGS.config.method   # a config file that failed to load raises here, not while parsing
        return args
    except flags.Error as e:
        text = str(e)
        if 'Traceback' in text:   # get_config raised: keep its message, drop the traceback
            last = [line for line in text.splitlines() if line.strip()][-1]
            text = f'{_config_path(argv)}: ' + re.sub(r'^[\w.]*(Error|Exception): ', '', last.strip())
        fail(text)
    except OSError:
        path = _config_path(argv)
        fail(f'config file {path!r} not found' if not os.path.isfile(path) else f'cannot load config file {path!r}'
             + '; give --config=configs/<name>.py:<method>, e.g. --config=configs/synthetic.py:method1')
    except WsolError as e:
        fail(e)
    except (AttributeError, KeyError) as e:
        text = str(e.args[0] if e.args else e).replace('\\', '')
        names = re.findall(r"'(\w+)'", text)
        suggestion = re.search(r'Did you mean "(\w+)"', text)
        bad = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.') and names
               and a.split('=')[0].split('.')[-1] == names[0]]
        fail(f'unknown config key {bad[0] if bad else text}'
             + (f' (did you mean "{suggestion.group(1)}"?)' if suggestion else '')
             + '; the config file lists the valid keys')


def main(argv):
    if len(argv) > 1:
        fail(f'unexpected arguments: {" ".join(argv[1:])}')
    # Orbax and JAX log every checkpoint operation at INFO; keep the console for progress.
    logging.set_verbosity(logging.WARNING)
    from wsol_jax import parallel
    try:
        parallel.spread_over_host_cores(FLAGS.config)   # before JAX starts its backends
        parallel.maybe_initialize_distributed(FLAGS.config.distributed)
        from wsol_jax.run import run
        run(FLAGS.config, FLAGS.workdir, FLAGS.stage)
    except WsolError as e:
        fail(e)


if __name__ == '__main__':
    app.run(main, flags_parser=parse_flags)
