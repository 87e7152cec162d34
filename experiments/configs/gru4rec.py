"""GRU4Rec+ (Hidasi & Karatzoglou 2018): a GRU over the sequence, BPR-max over the other
sequences' next items plus 2048 popularity-sampled items. Network: aos4rec_jax/models/gru4rec.py;
method: aos4rec_jax/methods/gru4rec.py.

python main.py --config=experiments/configs/gru4rec.py --workdir=/tmp/gru4rec \
    --config.data_dir=PREPARED_DIR
Variants (comma-separated): ':paper' (embedding size 128, the AOS4Rec paper's rule), ':top1'
(TOP1-max loss), ':ce' (cross-entropy over the same negatives), ':softmax' (cross-entropy over
all items), ':bce' (binary cross-entropy with one sampled negative a position, SASRec's loss),
':uniform' (the 2048 additional negatives drawn uniformly, sample_alpha 0, as the S3-Rec
authors' GRU4Rec draws them; the 99-negative scene's negatives are uniform too), ':uniform_wd'
(':uniform' plus decoupled weight decay 0.5), ':tiny', ':quick'.
The K-list is the top-K of the next-item scores (decode.strategy='topk'); another decoder
(--config.decode.strategy=beam, greedy, ...) feeds the model its own predictions.
"""
from aos4rec_jax.methods.gru4rec import GRU4Rec
from experiments.configs import _next_item
from experiments.configs import base


def top1(c):
    c.gru4rec.loss = 'top1_max'
    return c


def ce(c):
    c.gru4rec.loss = 'ce'
    return c


def softmax(c):
    c.gru4rec.loss = 'softmax'
    return c


def bce(c):
    c.gru4rec.loss = 'bce'
    return c


def uniform(c):
    c.gru4rec.sample_alpha = 0.0
    return c


def uniform_wd(c):
    """`:uniform` plus decoupled weight decay 0.5 (AdamW, on every parameter): on the sparse
    Amazon and Yelp sets the plain runs peak early on the 99-negative validation and fall after
    (docs/results/next_item_notes.md, "GRU4Rec+ with weight decay")."""
    c = uniform(c)
    c.weight_decay = 0.5
    return c


VARIANTS = {'top1': top1, 'ce': ce, 'softmax': softmax, 'bce': bce, 'uniform': uniform,
            'uniform_wd': uniform_wd, 'paper': _next_item.paper}


def get_config(variant=''):
    c = _next_item.get_config('gru4rec', GRU4Rec.OPTIONS)
    c.model_kwargs.embed_dim = 64
    c.model_kwargs.dropout_rate = 0.25
    return base.apply_variant(c, variant, 'gru4rec.py', VARIANTS)
