"""RNN seq2seq recommender: bidirectional GRU encoder, attentive GRU decoder, trained by MLE.

python main.py --config=experiments/configs/gru.py --workdir=/tmp/gru --config.data_dir=PREPARED_DIR
Variants: ':tiny' (seconds on a CPU, for tests and quick looks).
"""
from experiments.configs import base


def get_config(variant=''):
  c = base.get_config()
  c.model = 'gru'
  c.train_steps = 5000
  if variant == 'tiny':
    c = base.tiny(c)
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of gru.py (known: 'tiny')")
  return c
