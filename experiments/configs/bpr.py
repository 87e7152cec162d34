"""BPR-MF (Rendle et al. 2009): user and item factors, BPR loss with a sampled negative.
Network: aos4rec_jax/models/bpr.py; method: aos4rec_jax/methods/bpr.py.

python main.py --config=experiments/configs/bpr.py --workdir=/tmp/bpr \
    --config.data_dir=PREPARED_DIR
Variants (comma-separated): ':paper' (embedding size 128, the AOS4Rec paper's rule), ':tiny',
':quick'.
The K-list is the top-K of the next-item scores (decode.strategy='topk'); another decoder
(--config.decode.strategy=beam, greedy, ...) feeds the model its own predictions.
"""
from aos4rec_jax.methods.bpr import BPR
from experiments.configs import _next_item
from experiments.configs import base


VARIANTS = {'paper': _next_item.paper}


def get_config(variant=''):
    c = _next_item.get_config('bpr', BPR.OPTIONS)
    c.model_kwargs.embed_dim = 64
    c.model_kwargs.dropout_rate = 0.0
    return base.apply_variant(c, variant, 'bpr.py', VARIANTS)
