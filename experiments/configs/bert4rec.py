"""BERT4Rec (Sun et al. 2019): a bidirectional Transformer trained by the cloze task (mask
proportion 0.2), [MASK] appended at prediction. Network: aos4rec_jax/models/bert4rec.py;
method: aos4rec_jax/methods/bert4rec.py.

python main.py --config=experiments/configs/bert4rec.py --workdir=/tmp/bert4rec \
    --config.data_dir=PREPARED_DIR
Variants (comma-separated): ':paper' (embedding size 128, the AOS4Rec paper's rule), ':tiny',
':quick'.
The K-list is the top-K of the next-item scores (decode.strategy='topk'); another decoder
(--config.decode.strategy=beam, greedy, ...) feeds the model its own predictions.
"""
from aos4rec_jax.methods.bert4rec import BERT4Rec
from experiments.configs import _next_item
from experiments.configs import base


VARIANTS = {'paper': _next_item.paper}


def get_config(variant=''):
    c = _next_item.get_config('bert4rec', BERT4Rec.OPTIONS)
    c.model_kwargs.embed_dim = 64
    c.model_kwargs.num_layers = 2
    c.model_kwargs.num_heads = 2
    c.model_kwargs.mlp_dim = 256
    c.model_kwargs.dropout_rate = 0.1
    return base.apply_variant(c, variant, 'bert4rec.py', VARIANTS)
