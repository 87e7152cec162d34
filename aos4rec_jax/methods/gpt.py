"""GPT-style decoder-only recommender with the generation strategies (Volodkevich et al.,
arXiv:2409.17730; the network: models/gpt.py).

Training: next-item prediction, as a language model. Each step draws B users and takes each
one's last W + 1 train items: inputs [B, W], targets the next item at every position, softmax
cross-entropy over all items (GPT-2's LM loss; padding positions carry no loss). W =
`gpt.train_len`, by default history_len + K - 1: generating K items after a history of L reads
positions up to L + K - 2, so the training windows are that long and every such position is
trained (the seed's code instead crops the history to n_positions - K items at generation).

The K-list (`config.decode.strategy`):
  'topk'                 the K best next-item scores after the history (the paper's "Top-K");
  'greedy', 'beam', 'sample', 'gumbel', 'multi_rra', 'multi_ra'
                         decoding.py on the network's own cache (`init_decode_state` /
                         `decode_step`): the history is encoded once, every step feeds one item
                         and reads the cached keys and values; the history (when the protocol
                         bans it) and the items already generated are never generated.
The multi-sequence strategies draw `decode.num_sequences` lists at `decode.temperature` and rank
items by reciprocal rank (RRA) or summed probability (RA) over them (decoding.multi_sequence).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from aos4rec_jax import config as config_lib
from aos4rec_jax import data as data_lib
from aos4rec_jax import decoding
from aos4rec_jax.methods import losses
from aos4rec_jax.methods.next_item import NextItemMethod
from aos4rec_jax.models.gpt import GPT as GPTNet, GPTConfig


class GPT(NextItemMethod):
    NETWORK = GPTNet
    NETWORK_CONFIG = GPTConfig
    OPTIONS = {
        'train_len': 0,           # training window W (0: history_len + K - 1)
    }

    @classmethod
    def validate_options(cls, opts, config):
        if int(opts.train_len) < 0:
            raise config_lib.ConfigError(f'config.{config.model}.train_len: must be >= 0 '
                                         f'(0 = history_len + K - 1), got {opts.train_len}')

    @classmethod
    def generator_network(cls, config: dict):
        # GPT and CRR keep the same network; its position table follows the training window
        opts = config.get(config.get('model', ''), {}) or {}
        return f'gpt (train_len {int(opts.get("train_len", 0))})'

    @property
    def train_len(self) -> int:
        w = int(self.opts.train_len)
        return w if w > 0 else self.L + self.info.k - 1

    def network_kwargs(self) -> dict:
        kw = super().network_kwargs()
        # positions: the training window, and at least a full history plus K - 1 fed-back items
        kw['max_len'] = max(self.train_len, self.L + self.info.k - 1)
        return kw

    def describe(self):
        return (f'GPT: next-item cross-entropy on windows of {self.train_len} items, '
                f'{self.model.cfg.max_len} positions; K-list: {self.config.decode.strategy}')

    def init_params(self, rng):
        seq = jnp.zeros((2, self.L), jnp.int32)
        return self.model.init({'params': rng, 'dropout': rng}, seq, None, False,
                               method=self.model.encode)['params']

    def loss(self, params, data, key):
        k_batch, k_drop = jax.random.split(key)
        users, inputs, targets = data_lib.sample_user_sequences(data, k_batch, self.batch_size,
                                                                self.train_len)
        inputs, targets = self.constrain(inputs), self.constrain(targets)
        h = self.encode(params, inputs, users, key=k_drop, train=True)        # [B, W, D]
        s, n = losses.softmax_ce(self.score_all(params, h), targets, targets > 0)
        return s, n, {}

    # -- the K-lists ---------------------------------------------------------------------------
    def generate_fn(self):
        d = self.config.decode
        if d.strategy == 'topk':
            return super().generate_fn()
        info, model = self.info, self.model

        def generate_fn(params, batch, rng):
            variables = {'params': params}
            state = model.apply(variables, batch['history'], info.k,
                                method=model.init_decode_state)

            def step_fn(s, prev, t):
                return model.apply(variables, s, prev, t, method=model.decode_step)

            return decoding.generate_sampled_and_full(
                step_fn, state, rng, batch, decode_cfg=d, vocab_size=info.vocab_size,
                bos_id=info.bos_id, k=info.k)
        return generate_fn

    def decode_description(self):
        out = super().decode_description()
        if out['strategy'] != 'topk':
            out['note'] = 'the GPT decoder continues the history item by item (KV cache)'
        return out


METHODS = {'gpt': GPT}
