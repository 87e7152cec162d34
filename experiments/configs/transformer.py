"""Transformer encoder-decoder seq2seq recommender trained by MLE (AOS4Rec Sec. 3.3).

python main.py --config=experiments/configs/transformer.py --workdir=/tmp/tf \
    --config.data_dir=PREPARED_DIR
Variants: ':tiny' (seconds on a CPU, for tests and quick looks).
"""
from experiments.configs import base


def get_config(variant=''):
  c = base.get_config()
  c.model = 'transformer'
  c.train_steps = 5000
  if variant == 'tiny':
    c = base.tiny(c)
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of transformer.py (known: 'tiny')")
  return c
