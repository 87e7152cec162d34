"""BPR-MF (Rendle et al., UAI 2009): matrix factorisation trained with the BPR loss.

The network is models/bpr.py (user and item factors, an item bias). Batches: B (user, item)
train interactions drawn uniformly, each with `num_negatives` items drawn uniformly (a draw that
is the positive itself is redrawn; other items of the user are not checked: with sparse data a
collision is rare, and BPR's own sampler does the same). Loss: -log sigma(x_ui - x_uj), plus
`reg` x (||P_u||^2 + ||Q_i||^2 + ||Q_j||^2) on the batch's factors. Evaluation scores the
user's factor; a history the data set never saw (`recommend`, users = -1) is folded in as the
mean of its items' factors.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from aos4rec_jax import config as config_lib
from aos4rec_jax import data as data_lib
from aos4rec_jax.methods import losses
from aos4rec_jax.methods.next_item import NextItemMethod, sample_negatives
from aos4rec_jax.models.bpr import BPRMF, BPRMFConfig


class BPR(NextItemMethod):
    NETWORK = BPRMF
    NETWORK_CONFIG = BPRMFConfig
    OPTIONS = {
        'num_negatives': 1,     # sampled negatives a positive
        'reg': 0.0,             # L2 on the batch's factors (lambda)
    }

    @classmethod
    def validate_options(cls, opts, config):
        if int(opts.num_negatives) < 1:
            raise config_lib.ConfigError(f'config.{config.model}.num_negatives: must be >= 1')
        if opts.reg < 0:
            raise config_lib.ConfigError(f'config.{config.model}.reg: must be >= 0')

    def epoch_examples(self):
        return int(self.ds.prepared.n_train.sum())

    def loss(self, params, data, key):
        k_batch, k_neg, k_drop = jax.random.split(key, 3)
        users, items = data_lib.sample_interactions(data, k_batch, self.batch_size)
        users, items = self.constrain(users), self.constrain(items)
        neg = sample_negatives(k_neg, (users.shape[0], int(self.opts.num_negatives)), self.N,
                               exclude=items[:, None])
        dummy = jnp.zeros((users.shape[0], 1), jnp.int32)
        h = self.encode(params, dummy, users, key=k_drop, train=True)               # [B, D]
        s_pos = self.score_items(params, h, items[:, None])[:, 0]
        s_neg = self.score_items(params, h, neg)
        s, n = losses.bpr(s_pos, s_neg, jnp.ones_like(s_pos, bool))
        if self.opts.reg > 0:
            sq = (jnp.sum(jnp.square(h.astype(jnp.float32)))
                  + jnp.sum(jnp.square(self.item_vectors(params, items).astype(jnp.float32)))
                  + jnp.sum(jnp.square(self.item_vectors(params, neg).astype(jnp.float32)))
                  / neg.shape[1])
            s = s + float(self.opts.reg) * sq
        return s, n, {}


METHODS = {'bpr': BPR}
