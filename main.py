"""wsol-jax command line: `python main.py --config=configs/synthetic.py:method1 --workdir=DIR`.

Any config field can be overridden (`--config.g.epochs=5`); `--stage` runs one stage.
"""
import sys

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file('config', None, 'Config file and argument, e.g. configs/cub.py:method2.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.DEFINE_enum('stage', 'all', ['all', 'train_f', 'train_g', 'select', 'evaluate'],
                  'Run every stage (all) or only one.')
flags.mark_flags_as_required(['config', 'workdir'])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    from wsol_jax import parallel
    from wsol_jax.errors import WsolError
    try:
        parallel.maybe_initialize_distributed(FLAGS.config.distributed)
        from wsol_jax.run import run
        run(FLAGS.config, FLAGS.workdir, FLAGS.stage)
    except WsolError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)


if __name__ == '__main__':
    app.run(main)
