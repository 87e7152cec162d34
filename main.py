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
import re
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
    from aos4rec_jax import checkpoint as ckpt_lib
    from aos4rec_jax import preemption
    try:
        trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (config_lib.ConfigError, FileNotFoundError, trainer.TrainingDivergedError, trainer.RunError,
            data_prep.DataPrepError, ckpt_lib.DiskFullError) as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
    except OSError as e:                     # a full disk while writing logs or results
        if not ckpt_lib.is_space_error(e):
            raise
        print(f'error: {e.filename or _WORKDIR.value}: {e.strerror}; free space, then rerun the '
              'same command to resume', file=sys.stderr)
        sys.exit(1)
    except preemption.Stopped as e:          # SIGTERM / Ctrl-C: the step was saved
        print(str(e), file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:                # a second Ctrl-C (or one on several hosts)
        print(f'interrupted; the saved checkpoints in {_WORKDIR.value} are intact: rerun the same '
              'command to resume', file=sys.stderr)
        sys.exit(130)


HELP_FLAGS = ('-h', '--help', '-?', '--helpshort', '--helpfull')


def _flag_error_line(e: Exception, argv: list) -> str:
    """One line for a user's mistake on the command line (absl would print a traceback of up to
    50 lines): an unknown config field (named, with the closest known one), an unknown variant,
    a missing config file, a value of the wrong type."""
    if isinstance(e, (AttributeError, KeyError)):          # ml_collections: no such field
        while e.args and isinstance(e.args[0], BaseException):   # AttributeError(KeyError(msg))
            e = e.args[0]
        text = str(e.args[0]) if e.args else ''
        name = text.splitlines()[0].strip("'\"") if text else '?'
        flag = next((a.split('=')[0] for a in argv[1:]
                     if a.startswith('--config.') and a.split('=')[0].split('.')[-1] == name), None)
        hint = re.search(r'Did you mean "([^"]+)"', text)
        return (f'{flag or "--config." + name}: no such config field'
                + (f'; did you mean {hint.group(1)!r}?' if hint else '')
                + ' (the fields are those of the config file; python main.py list names the files)')
    text = str(e)
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    head = lines[0] if lines else type(e).__name__
    if 'Traceback (most recent call last)' in text:        # an error raised inside the config file
        flag = re.sub(r'^flag ', '', head).split(': Error whilst')[0].rstrip(':')
        return f'{flag}: {re.sub(r"^[A-Za-z]*Error: ", "", lines[-1])}'
    errno = next((l for l in lines if l.startswith('[Errno')), None)
    return f'{head.rstrip(":")}: {errno}' if errno else ' '.join(lines)


def _parse_flags(argv):
    """absl's flag parsing, with one line (and exit 2) instead of a traceback for bad flags."""
    try:
        args = flags.FLAGS(argv)
        if _CONFIG.value is not None:
            _CONFIG.value.get('model')        # a config file that failed to load raises here
        return args
    except OSError as e:                      # ml_collections defers a missing file to first use
        errno = next((l.strip() for l in str(e).splitlines() if '[Errno' in l), str(e).splitlines()[0])
        flag = next((a for a in argv[1:] if a.startswith('--config=')), '--config')
        print(f'error: {flag}: cannot load the config file ({errno})', file=sys.stderr)
    except (flags.Error, AttributeError, KeyError) as e:
        print(f'error: {_flag_error_line(e, argv)}', file=sys.stderr)
    print('usage: python main.py --config=experiments/configs/FILE.py[:VARIANT] --workdir=DIR '
          '[--config.FIELD=VALUE ...]   (python main.py list; --help)', file=sys.stderr)
    sys.exit(2)


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
    app.run(main, flags_parser=_parse_flags)
