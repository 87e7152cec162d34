"""GCSAN (Xu et al., IJCAI 2019): graph contextualized self-attention for session-based
recommendation.

The network is models/gcsan.py (session graph, gated GNN, self-attention, h = omega x the
attention output at the last position + (1 - omega) x the last item's node vector). Batches:
every prefix of every train sequence is an example (SR-GNN's data augmentation): windows of
the last L items before position i and the item at i, drawn uniformly over all users' train
parts. Loss: softmax cross-entropy over all items (the paper's).

With `config.pack_sequences` (and one attention block, the paper's) the network runs on the
batch's real items only (`models.gcsan.GCSAN.encode_packed`; docs/DESIGN.md, "Packed
sequences"): a window holds min(i, L) items, most of them far fewer than L.
"""
from __future__ import annotations

import jax
import numpy as np

from aos4rec_jax import data as data_lib
from aos4rec_jax.methods import losses
from aos4rec_jax.methods.next_item import NextItemMethod
from aos4rec_jax.models.gcsan import GCSAN as GCSANNet, GCSANConfig


class GCSAN(NextItemMethod):
    NETWORK = GCSANNet
    NETWORK_CONFIG = GCSANConfig
    OPTIONS = {}

    def __init__(self, config, ds):
        super().__init__(config, ds)
        # the packed network reads h at the last position only: one attention block (the paper's)
        self.pack_sequences = (bool(config.get('pack_sequences', False))
                               and self.network_kwargs().get('num_blocks', 1) == 1)

    def epoch_examples(self):
        return self.info.num_windows

    def packing(self) -> bool:
        return self.pack_sequences

    def packable_rows(self):
        """int [windows]: the items of every training window (min(i, L) for position i = 1 ..
        n - 1 of each user's train part: `sample_windows_of_users` draws them uniformly), an
        upper bound of its session graph's nodes."""
        if not self.pack_sequences:
            return None
        n = np.asarray(self.ds.prepared.n_train, np.int64)
        return np.concatenate([np.minimum(np.arange(1, k), self.L) for k in n[n >= 2]]
                              or [np.zeros(0, np.int64)])

    def window_batch(self, data, key):
        """(k_drop, users [B], histories [B, L], targets [B]) of a step's key."""
        k_batch, k_drop = jax.random.split(key)
        users, b = data_lib.sample_windows_of_users(data, k_batch, self.batch_size, self.L, 1)
        return k_drop, users, self.constrain(b.history), self.constrain(b.target[:, 0])

    def counted(self, data, key):
        return self.window_batch(data, key)[2] > 0

    def loss(self, params, data, key, packed=False):
        k_drop, users, hist, tgt = self.window_batch(data, key)
        if packed:
            h = self.model.apply({'params': params}, hist, self.groups, self.pack_cap, True,
                                 method=self.model.encode_packed, rngs={'dropout': k_drop})
        else:
            h = self.encode(params, hist, users, key=k_drop, train=True)            # [B, D]
        s, n = losses.softmax_ce(self.score_all(params, h), tgt, tgt > 0)
        return s, n, {}


METHODS = {'gcsan': GCSAN}
