"""GCSAN (Xu et al. 2019): session graph, gated GNN, self-attention, omega-weighted combination,
softmax cross-entropy over every prefix. Network: aos4rec_jax/models/gcsan.py;
method: aos4rec_jax/methods/gcsan.py.

python main.py --config=experiments/configs/gcsan.py --workdir=/tmp/gcsan \
    --config.data_dir=PREPARED_DIR
Variants (comma-separated): ':paper' (embedding size 128, the AOS4Rec paper's rule), ':tiny',
':quick'.
The K-list is the top-K of the next-item scores (decode.strategy='topk'); another decoder
(--config.decode.strategy=beam, greedy, ...) feeds the model its own predictions.
"""
from aos4rec_jax.methods.gcsan import GCSAN
from experiments.configs import _next_item
from experiments.configs import base


VARIANTS = {'paper': _next_item.paper}


def get_config(variant=''):
    c = _next_item.get_config('gcsan', GCSAN.OPTIONS)
    c.model_kwargs.embed_dim = 100
    c.model_kwargs.num_layers = 1
    c.model_kwargs.dropout_rate = 0.2
    return base.apply_variant(c, variant, 'gcsan.py', VARIANTS)
