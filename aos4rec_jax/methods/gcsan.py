"""GCSAN (Xu et al., IJCAI 2019): graph contextualized self-attention for session-based
recommendation.

The network is models/gcsan.py (session graph, gated GNN, self-attention, h = omega x the
attention output at the last position + (1 - omega) x the last item's node vector). Batches:
every prefix of every train sequence is an example (SR-GNN's data augmentation): windows of
the last L items before position i and the item at i, drawn uniformly over all users' train
parts. Loss: softmax cross-entropy over all items (the paper's).
"""
from __future__ import annotations

import jax

from aos4rec_jax import data as data_lib
from aos4rec_jax.methods import losses
from aos4rec_jax.methods.next_item import NextItemMethod
from aos4rec_jax.models.gcsan import GCSAN as GCSANNet, GCSANConfig


class GCSAN(NextItemMethod):
    NETWORK = GCSANNet
    NETWORK_CONFIG = GCSANConfig
    OPTIONS = {}

    def epoch_examples(self):
        return self.info.num_windows

    def loss(self, params, data, key):
        k_batch, k_drop = jax.random.split(key)
        users, b = data_lib.sample_windows_of_users(data, k_batch, self.batch_size, self.L, 1)
        hist, tgt = self.constrain(b.history), self.constrain(b.target[:, 0])
        h = self.encode(params, hist, users, key=k_drop, train=True)                # [B, D]
        s, n = losses.softmax_ce(self.score_all(params, h), tgt, tgt > 0)
        return s, n, {}


METHODS = {'gcsan': GCSAN}
