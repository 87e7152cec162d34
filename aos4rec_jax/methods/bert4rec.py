"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional Transformer trained by the cloze task.

The network is models/bert4rec.py ([MASK] = item id N + 1). Batches: B users, each one's last L
train items. Cloze masking (the authors' data generation): round(`mask_prob` x length) of the
row's real positions, at least 1 and at most `max_predictions`, chosen uniformly, are replaced
by [MASK] (padding is never masked); the loss is the softmax cross-entropy over all items of
the original item at every masked position. Prediction (evaluation and `recommend`): [MASK] is
appended to the history (its oldest item drops out of the window) and the K-list ranks the
scores at that position.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from aos4rec_jax import config as config_lib
from aos4rec_jax import data as data_lib
from aos4rec_jax.methods import losses
from aos4rec_jax.methods.next_item import NextItemMethod, shift_in
from aos4rec_jax.models.bert4rec import BERT4Rec as BERT4RecNet, BERT4RecConfig


def cloze_mask(key, seq, mask_prob: float, max_predictions: int):
    """(positions [B, M], weights [B, M]) of the positions to mask: round(mask_prob * len) real
    positions a row (at least 1, at most M = max_predictions), chosen uniformly; weight 1 for a
    chosen position, 0 for the unused slots (their position is arbitrary)."""
    real = seq > 0
    n_real = jnp.sum(real, axis=1)
    n_mask = jnp.clip(jnp.round(mask_prob * n_real), 1, max_predictions).astype(jnp.int32)
    n_mask = jnp.minimum(n_mask, n_real)
    u = jax.random.uniform(key, seq.shape)
    score = jnp.where(real, u, -1.0)
    _, pos = jax.lax.top_k(score, max_predictions)                               # [B, M]
    weights = (jnp.arange(max_predictions)[None, :] < n_mask[:, None]).astype(jnp.float32)
    return pos.astype(jnp.int32), weights


class BERT4Rec(NextItemMethod):
    NETWORK = BERT4RecNet
    NETWORK_CONFIG = BERT4RecConfig
    OPTIONS = {
        'mask_prob': 0.2,           # rho, the masked proportion (paper: 0.2 on ML-1M)
        'max_predictions': 0,       # masked positions a row at most (0: ceil(rho * L) + 1)
    }

    @classmethod
    def validate_options(cls, opts, config):
        if not 0 < opts.mask_prob <= 1:
            raise config_lib.ConfigError(f'config.{config.model}.mask_prob: must be in (0, 1], '
                                         f'got {opts.mask_prob}')
        if int(opts.max_predictions) < 0:
            raise config_lib.ConfigError(f'config.{config.model}.max_predictions: must be >= 0')

    def __init__(self, config, ds):
        super().__init__(config, ds)
        m = int(self.opts.max_predictions)
        self.M = min(self.L, m if m > 0 else math.ceil(float(self.opts.mask_prob) * self.L) + 1)
        self.mask_id = self.N + 1

    def loss(self, params, data, key):
        k_batch, k_mask, k_drop = jax.random.split(key, 3)
        users, inputs, pos = data_lib.sample_user_sequences(data, k_batch, self.batch_size, self.L)
        seq = jnp.concatenate([inputs, pos[:, -1:]], axis=1)[:, 1:]      # the last L train items
        seq = self.constrain(seq)
        where, w = cloze_mask(k_mask, seq, float(self.opts.mask_prob), self.M)
        b = jnp.arange(seq.shape[0])[:, None]
        chosen = jnp.zeros(seq.shape, bool).at[b, where].max(w > 0)
        masked = jnp.where(chosen, self.mask_id, seq)
        h = self.encode(params, masked, users, key=k_drop, train=True)               # [B, L, D]
        h_m = jnp.take_along_axis(h, where[..., None], axis=1)                     # [B, M, D]
        labels = jnp.take_along_axis(seq, where, axis=1)
        s, n = losses.softmax_ce(self.score_all(params, h_m), labels, w > 0)
        return s, n, {}

    def scores(self, params, history, users):
        seq = shift_in(history, jnp.full((history.shape[0],), self.mask_id, history.dtype))
        h = self.encode(params, seq, users)[:, -1]
        return self.score_all(params, h).astype(jnp.float32)


METHODS = {'bert4rec': BERT4Rec}
