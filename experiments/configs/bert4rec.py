"""BERT4Rec (Sun et al. 2019): a bidirectional Transformer trained by the cloze task, [MASK]
appended at prediction. Network: aos4rec_jax/models/bert4rec.py; method:
aos4rec_jax/methods/bert4rec.py.

python main.py --config=experiments/configs/bert4rec.py --workdir=/tmp/bert4rec \
    --config.data_dir=PREPARED_DIR

Where each default comes from (measured runs: docs/results/bert4rec_tuning.md, LastFM, selected
by validation sampled NDCG@10):
  network      d = 64, 2 blocks, 2 heads, FFN 256, GELU, truncated-normal 0.02 init, output
               transform + tied table + bias: the paper and the authors' code (FeiSun/BERT4Rec).
  dropout      hidden 0.2, attention 0.2: the authors' ML-1M configuration file (Beauty: 0.5 /
               0.2); on LastFM 0.2 / 0.2 with mask 0.4 and prefixes gave the best validation
               (0.3206 at 2,500 steps; 0.1 / 0.1: 0.3060 with sliding windows; 0.5 / 0.2 with
               mask 0.6: 0.2658).
  mask_prob    0.4: the authors' Steam script (ML-1M 0.2, Beauty 0.6); the best LastFM run.
  prefixes     every train prefix of >= 2 items (its last L items) is a training sequence: not
               the authors' (their sliding windows: window_step = 0.1 L = 5 on Beauty), but on
               LastFM it gave the best validation and test figures; the old rule (each user's
               last L items only) sees 51% of LastFM's train items and overfits after 1,500 steps.
  mask_last_prob  1/11: the authors' one "mask only the last item" instance per sequence beside
               dupe_factor = 10 cloze copies.
  optimizer    Adam 1e-3, no warm-up, constant, batch 128 (the shared next-item settings; the
               authors: AdamW 1e-4, weight decay 0.01, linear decay, batch 256, 400k steps, far
               beyond a CPU budget; `bert4rec.lr_decay` and config.weight_decay give their
               schedule, not measured here).
Variants (comma-separated): ':paper' (embedding size 128, the AOS4Rec paper's rule),
':untuned' (the defaults before docs/results/bert4rec_tuning.md: each user's last L items, no
mask-last rows, dropout 0.1, mask 0.2), ':tiny', ':quick'.
The K-list is the top-K of the next-item scores (decode.strategy='topk'); another decoder
(--config.decode.strategy=beam, greedy, ...) feeds the model its own predictions.
"""
from aos4rec_jax.methods.bert4rec import BERT4Rec
from experiments.configs import _next_item
from experiments.configs import base


def before_tuning(c):
    """The defaults before docs/results/bert4rec_tuning.md (for comparisons)."""
    c.bert4rec.prefixes = False
    c.bert4rec.window_step = 0
    c.bert4rec.mask_last_prob = 0.0
    c.bert4rec.mask_prob = 0.2
    c.model_kwargs.dropout_rate = 0.1
    c.model_kwargs.attention_dropout_rate = 0.1
    return c


VARIANTS = {'paper': _next_item.paper, 'untuned': before_tuning}


def get_config(variant=''):
    c = _next_item.get_config('bert4rec', BERT4Rec.OPTIONS)
    c.model_kwargs.embed_dim = 64
    c.model_kwargs.num_layers = 2
    c.model_kwargs.num_heads = 2
    c.model_kwargs.mlp_dim = 256
    c.model_kwargs.dropout_rate = 0.2
    c.model_kwargs.attention_dropout_rate = 0.2
    c.bert4rec.mask_prob = 0.4
    c.bert4rec.prefixes = True
    c.bert4rec.mask_last_prob = 1 / 11
    return base.apply_variant(c, variant, 'bert4rec.py', VARIANTS)
