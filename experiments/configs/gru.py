"""RNN seq2seq recommender: bidirectional GRU encoder, attentive GRU decoder, trained by MLE.

python main.py --config=experiments/configs/gru.py --workdir=/tmp/gru --config.data_dir=PREPARED_DIR
Variants: ':tiny' (seconds on a CPU, for tests), ':quick' (minutes on a CPU, smaller model).
"""
from experiments.configs import base


def get_config(variant=''):
    c = base.get_config()
    c.model = 'gru'
    c.train_steps = 5000
    return base.apply_variant(c, variant, 'gru.py')
