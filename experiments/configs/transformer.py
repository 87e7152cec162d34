"""Transformer encoder-decoder seq2seq recommender trained by MLE (AOS4Rec Sec. 3.3).

python main.py --config=experiments/configs/transformer.py --workdir=/tmp/tf \
    --config.data_dir=PREPARED_DIR
Variants: ':tiny' (seconds on a CPU, for tests), ':quick' (minutes on a CPU, smaller model).
"""
from experiments.configs import base


def get_config(variant=''):
    c = base.get_config()
    c.model = 'transformer'
    c.train_steps = 5000
    return base.apply_variant(c, variant, 'transformer.py')
