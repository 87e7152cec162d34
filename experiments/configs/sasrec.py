"""SASRec (Kang & McAuley 2018): causal self-attention next-item recommender, BCE with one
sampled negative a position. The network: aos4rec_jax/models/sasrec.py; the method (batches,
loss, K-lists): aos4rec_jax/methods/sasrec.py.

python main.py --config=experiments/configs/sasrec.py --workdir=/tmp/sasrec \
    --config.data_dir=PREPARED_DIR          # e.g. data_prep --format seqlines --protocol loo

Defaults are the paper's for the sparse data sets (d = 50, 2 blocks, 1 head, dropout 0.5,
Adam 1e-3, batch 128); maxlen is the prepared dataset's history_len (50; 200 on ML-1M).
Variants (comma-separated): ':plus' SASRec+ (full softmax cross-entropy), ':ml1m' (dropout 0.2,
the paper's ML-1M setting), ':paper' (embedding size 128, the AOS4Rec paper's rule for its
Table 3 runs), ':s3rec' (the S3-Rec repository's width, heads, batch and all-items selection,
for its all-items figures), ':s3rec_net' (':s3rec' with that repository's network too),
':tiny' (seconds on a CPU), ':quick'.
The K-list is the top-K of the next-item scores (decode.strategy='topk'); set
--config.decode.strategy=beam (or greedy, ...) to feed the model its own predictions instead.
"""
from aos4rec_jax.methods.sasrec import SASRec
from experiments.configs import _next_item
from experiments.configs import base


def plus(c):
    c.sasrec.loss = 'ce'
    return c


def ml1m(c):
    c.model_kwargs.dropout_rate = 0.2
    return c


def s3rec(c):
    """The S3-Rec repository's settings for its SASRec (run_finetune_full.py without a pretrained
    checkpoint): width 64, 2 heads, batch 256, parameters kept by the all-items validation
    (it stops on full NDCG@20; we keep the best full NDCG@10). Its network also differs (GELU,
    layer norm on the input); ours stays the SASRec paper's."""
    c.model_kwargs.embed_dim = 64
    c.model_kwargs.num_heads = 2
    c.batch_size = 256
    c.select_by = 'full_ndcg'
    return c


def s3rec_net(c):
    """':s3rec' with the S3-Rec repository's network too (models/sasrec.py, style='bert':
    input layer norm, post-norm blocks, GELU, no sqrt(d) scale)."""
    c = s3rec(c)
    c.model_kwargs.style = 'bert'
    return c


VARIANTS = {'plus': plus, 'ml1m': ml1m, 'paper': _next_item.paper, 's3rec': s3rec,
            's3rec_net': s3rec_net}


def get_config(variant=''):
    c = _next_item.get_config('sasrec', SASRec.OPTIONS)
    c.model_kwargs.embed_dim = 50
    c.model_kwargs.num_layers = 2
    c.model_kwargs.num_heads = 1
    c.model_kwargs.dropout_rate = 0.5
    return base.apply_variant(c, variant, 'sasrec.py', VARIANTS)
