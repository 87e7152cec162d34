"""Trains and evaluates one recommender, described by an ml_collections config file.

usage:
  python main.py --config=experiments/configs/FILE.py[:VARIANT] --workdir=DIR [--config.FIELD=VALUE ...]
  python main.py list        the config files, their variants and the methods they run

examples:
  python main.py --config=experiments/configs/transformer.py:quick --workdir=runs/quick
  python main.py --config=experiments/configs/gru.py --workdir=runs/gru \\
      --config.data_dir=data/ml-1m-subset --config.train_steps=3000 --config.seed=1

Rerunning the same command resumes from the workdir's latest checkpoint. Without
--config.data_dir the built-in synthetic dataset is generated (cached in the workdir).
Multi-host: --coordinator_address/--num_processes/--process_id (or the JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID environment variables, or --distributed under a cluster JAX
detects itself).
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (FILE.py or FILE.py:variant; '
                                          'python main.py list names them).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for checkpoints, metrics and predictions.')
_COORD = flags.DEFINE_string('coordinator_address', None, 'Multi-host: host:port of process 0.')
_NPROC = flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.')
_PID = flags.DEFINE_integer('process_id', None, 'Multi-host: this process index.')
_DIST = flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() with cluster '
                          'auto-detection even without the flags above.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    logging.set_verbosity(logging.WARNING)   # keep orbax's INFO chatter off the console
    import jax
    coord = _COORD.value or os.environ.get('JAX_COORDINATOR_ADDRESS')
    if coord or _DIST.value:
        nproc = _NPROC.value or (int(os.environ['JAX_NUM_PROCESSES']) if 'JAX_NUM_PROCESSES' in os.environ else None)
        pid = _PID.value if _PID.value is not None else (
            int(os.environ['JAX_PROCESS_ID']) if 'JAX_PROCESS_ID' in os.environ else None)
        jax.distributed.initialize(coordinator_address=coord, num_processes=nproc, process_id=pid)
    import data_prep
    from aos4rec_jax import config as config_lib
    from aos4rec_jax import trainer
    try:
        trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (config_lib.ConfigError, FileNotFoundError, trainer.TrainingDivergedError, trainer.RunError,
            data_prep.DataPrepError) as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)


HELP_FLAGS = ('-h', '--help', '-?', '--helpshort', '--helpfull')


def _listing() -> str:
    from experiments.configs import _listing as listing_lib
    return listing_lib.listing()


if __name__ == '__main__':
    if sys.argv[1:] == ['list']:
        print(_listing())
        sys.exit(0)
    if not sys.argv[1:]:                                  # no arguments: what to type
        print(__doc__ + '\n' + _listing())
        sys.exit(2)
    if any(a in HELP_FLAGS for a in sys.argv[1:]):      # absl prints this docstring for --help
        __doc__ = __doc__ + '\n' + _listing().replace('%', '%%') + '\n'
    app.run(main)
