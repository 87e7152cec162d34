"""Caser (Tang & Wang, WSDM 2018): horizontal and vertical convolutions over the last L items.

The network is models/caser.py (its window is `caser.L`, 5 by default, independent of the
dataset's history length: it reads the last L items of whatever history it is given).
Batches (the authors' code): training windows of L items and the T = `caser.T` (3) items that
follow, drawn uniformly over all users' train parts, with the window's user; `num_negatives`
(3) items drawn uniformly among those not in the window or its targets. Loss: binary
cross-entropy, -sum_t log sigma(s(y_t)) - sum_j log(1 - sigma(s(neg_j))), averaged over the
targets.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from aos4rec_jax import config as config_lib
from aos4rec_jax import data as data_lib
from aos4rec_jax.methods.next_item import NextItemMethod, sample_negatives
from aos4rec_jax.models.caser import Caser as CaserNet, CaserConfig


class Caser(NextItemMethod):
    NETWORK = CaserNet
    NETWORK_CONFIG = CaserConfig
    OPTIONS = {
        'L': 5,                 # the window of last items the convolutions read (paper: 5)
        'T': 3,                 # targets a training window predicts (paper: 3)
        'num_negatives': 3,     # sampled negatives a window (the authors' code: 3)
    }

    @classmethod
    def validate_options(cls, opts, config):
        for f in ('L', 'T', 'num_negatives'):
            if int(opts[f]) < 1:
                raise config_lib.ConfigError(f'config.{config.model}.{f}: must be >= 1, got {opts[f]}')

    def network_kwargs(self):
        kw = super().network_kwargs()
        kw['max_len'] = int(self.opts.L)
        return kw

    def epoch_examples(self):
        return self.info.num_windows

    def loss(self, params, data, key):
        k_batch, k_neg, k_drop = jax.random.split(key, 3)
        L, T = int(self.opts.L), int(self.opts.T)
        users, b = data_lib.sample_windows_of_users(data, k_batch, self.batch_size, L, T)
        hist, tgt = self.constrain(b.history), self.constrain(b.target)
        h = self.encode(params, hist, users, key=k_drop, train=True)               # [B, 2d]
        neg = sample_negatives(k_neg, (tgt.shape[0], int(self.opts.num_negatives)), self.N,
                               exclude=jnp.concatenate([hist, tgt], axis=1))
        s_pos = self.score_items(params, h, tgt)                                     # [B, T]
        s_neg = self.score_items(params, h, neg)                                     # [B, n]
        mask = (tgt > 0).astype(jnp.float32)
        # per window: sum over its targets and its negatives; divided by the number of targets
        per = (jnp.sum(-jax.nn.log_sigmoid(s_pos) * mask, axis=1)
               + jnp.sum(-jax.nn.log_sigmoid(-s_neg), axis=1) * jnp.sum(mask, axis=1) / T)
        return jnp.sum(per), jnp.sum(mask), {}


METHODS = {'caser': Caser}
