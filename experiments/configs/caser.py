"""Caser (Tang & Wang 2018): horizontal and vertical convolutions over the last L = 5 items,
T = 3 targets a window, BCE with 3 sampled negatives. Network: aos4rec_jax/models/caser.py;
method: aos4rec_jax/methods/caser.py.

python main.py --config=experiments/configs/caser.py --workdir=/tmp/caser \
    --config.data_dir=PREPARED_DIR
Variants (comma-separated): ':paper' (embedding size 128, the AOS4Rec paper's rule), ':tiny',
':quick'.
The K-list is the top-K of the next-item scores (decode.strategy='topk'); another decoder
(--config.decode.strategy=beam, greedy, ...) feeds the model its own predictions.
"""
from aos4rec_jax.methods.caser import Caser
from experiments.configs import _next_item
from experiments.configs import base


VARIANTS = {'paper': _next_item.paper}


def get_config(variant=''):
    c = _next_item.get_config('caser', Caser.OPTIONS)
    c.model_kwargs.embed_dim = 50
    c.model_kwargs.num_heads = 1          # unused by Caser (the shared block requires d % heads == 0)
    c.model_kwargs.dropout_rate = 0.5
    return base.apply_variant(c, variant, 'caser.py', VARIANTS)
