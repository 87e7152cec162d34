"""GPT-style decoder-only recommender: next-item training, K-list by top-K or generation.

The network: aos4rec_jax/models/gpt.py; the method (batches, loss, K-lists):
aos4rec_jax/methods/gpt.py; docs/gpt.md.

python main.py --config=experiments/configs/gpt.py --workdir=/tmp/gpt \
    --config.data_dir=PREPARED_DIR

Defaults are the seed paper's GPT-2 (arXiv:2409.17730, its GPT_train.yaml: n_embd 64,
n_layer 2, n_head 1, dropout 0.1, Adam 1e-3, batch 64); the training window is history_len +
K - 1 items. The K-list is the top-K of the next-item scores (decode.strategy='topk', the
paper's "Top-K"); the variants generate it item by item through decoding.py with a KV cache:
':greedy', ':beam' (3 beams), ':sample' (one list at temperature 0.3), ':rra' / ':ra'
(20 lists at temperature 0.3, reciprocal-rank / relevance aggregation), ':paper' (embedding
size 128, the AOS4Rec paper's rule for its Table 3 runs). Any of them can be set
on the command line instead (--config.decode.strategy=multi_rra --config.decode.temperature=0.5).
':tiny' (seconds on a CPU), ':quick'.
"""
from aos4rec_jax.methods.gpt import GPT
from experiments.configs import _next_item
from experiments.configs import base


def _strategy(name, **kw):
    def variant(c):
        c.decode.strategy = name
        for k, v in kw.items():
            c.decode[k] = v
        return c
    return variant


VARIANTS = {
    'greedy': _strategy('greedy'),
    'beam': _strategy('beam', beam_size=3),
    'sample': _strategy('sample', temperature=0.3),
    'rra': _strategy('multi_rra', temperature=0.3, num_sequences=20),
    'ra': _strategy('multi_ra', temperature=0.3, num_sequences=20),
    'paper': lambda c: paper(c),
}


def _wide(c):
    c.model_kwargs.mlp_dim = 4 * c.model_kwargs.embed_dim     # GPT-2's inner width
    return c


def paper(c):
    """The paper's embedding size with GPT-2's inner width (crr.py's ':paper' too)."""
    return _wide(_next_item.paper(c))


def network_defaults(c):
    """The GPT network's sizes and batch (crr.py's policy is this network: it uses them too)."""
    c.batch_size = 64
    c.model_kwargs.embed_dim = 64
    c.model_kwargs.num_layers = 2
    c.model_kwargs.num_heads = 1
    c.model_kwargs.mlp_dim = 256
    c.model_kwargs.dropout_rate = 0.1
    return c


def get_config(variant=''):
    c = network_defaults(_next_item.get_config('gpt', GPT.OPTIONS))
    return base.apply_variant(c, variant, 'gpt.py', VARIANTS)
