"""SASRec (Kang & McAuley, ICDM 2018) and SASRec+ (the same network, full softmax).

The network is models/sasrec.py. Training (the authors' recipe): each step draws B users and
takes each one's last L + 1 train items: inputs [B, L], positives [B, L] (the next item at every
position), and for every position one negative drawn uniformly among the items not in the
user's sequence (redrawn on a hit, as `random_neq`). Loss (`sasrec.loss`):

  'bce'  -log sigma(h_t . e_pos) - log(1 - sigma(h_t . e_neg)) over the positions with a target
         (the paper; `num_negatives` > 1 sums over more negatives)
  'ce'   softmax cross-entropy over all items at every position (SASRec+, the variant later work
         found much stronger in the full-ranking scene)

The K-list: the top-K scores of the last position (decode.strategy 'topk'), or a decoder fed
its own predictions (methods/next_item.py).
"""
from __future__ import annotations

import jax.numpy as jnp

from aos4rec_jax import config as config_lib
from aos4rec_jax.methods import losses
from aos4rec_jax.methods.next_item import NextItemMethod
from aos4rec_jax.models.sasrec import SASRec as SASRecNet, SASRecConfig


class SASRec(NextItemMethod):
    NETWORK = SASRecNet
    NETWORK_CONFIG = SASRecConfig
    OPTIONS = {
        'loss': 'bce',            # bce (the paper: one sampled negative a position) | ce (SASRec+)
        'num_negatives': 1,       # sampled negatives a position (loss='bce')
        'l2_emb': 0.0,            # L2 on the item embeddings of the batch (the authors' l2_emb)
    }

    @classmethod
    def validate_options(cls, opts, config):
        if opts.loss not in ('bce', 'ce'):
            raise config_lib.ConfigError(f"config.{config.model}.loss: {opts.loss!r} is not one of "
                                         "('bce', 'ce')")
        if int(opts.num_negatives) < 1:
            raise config_lib.ConfigError(f'config.{config.model}.num_negatives: must be >= 1, '
                                         f'got {opts.num_negatives}')
        if opts.l2_emb < 0:
            raise config_lib.ConfigError(f'config.{config.model}.l2_emb: must be >= 0, got {opts.l2_emb}')

    def __init__(self, config, ds):
        super().__init__(config, ds)
        self.pack_sequences = bool(config.get('pack_sequences', False))

    def packing(self) -> bool:
        return self.pack_sequences or super().packing()

    def packable_rows(self):
        """With `config.pack_sequences` the network and the loss run on the batch's real items
        only (`encode_stream`); else SASRec+ ('ce': [rows, items] logits) packs its loss's rows
        (`config.pack_positions`) and 'bce' does not pack."""
        return self.sequence_rows() if self.pack_sequences or self.opts.loss == 'ce' else None

    def encode_stream(self, params, inputs, mask, key, *arrays):
        """The network on the real items of the batch only (docs/DESIGN.md, "Packed
        sequences"): each device group's real positions (mask [B, L]: those of the left-padded
        inputs, equal to the targets') end to end in chunks of L, `models.sasrec.encode_packed`.
        Returns (rows bool [G x C], h [G x C, D], arrays gathered alike [G x C, ...]), C = the
        group's chunks x L >= pack_cap."""
        rows, items, col, segment, per_group, arrays = self.stream(mask, inputs, self.pack_cap,
                                                                   *arrays)
        h = self.model.apply({'params': params}, items, col, segment, per_group, True,
                             method=self.model.encode_packed, rngs={'dropout': key})
        return rows, h.reshape(rows.shape[0], -1), arrays

    def loss(self, params, data, key, packed=False):
        (k_neg, k_drop), users, inputs, pos = self.sequence_batch(data, key)
        mask = pos > 0
        if packed and self.pack_sequences:
            if self.opts.loss == 'ce':
                rows, h_rows, (pos_rows,) = self.encode_stream(params, inputs, mask, k_drop, pos)
                s, n = losses.softmax_ce(self.score_all(params, h_rows), pos_rows, rows)
            else:
                neg = self.sampled_negatives(inputs, pos, k_neg, int(self.opts.num_negatives))
                rows, h_rows, (pos_rows, neg_rows) = self.encode_stream(
                    params, inputs, mask, k_drop, pos, neg)
                s, n = self.bce_of(params, h_rows, pos_rows, neg_rows, rows)
            return self._with_l2(params, s, n, inputs, pos)
        h = self.encode(params, inputs, users, key=k_drop, train=True)        # [B, L, D]
        if self.opts.loss == 'ce':
            rows, (h_rows, pos_rows) = self.positions(packed, mask, h, pos)
            s, n = losses.softmax_ce(self.score_all(params, h_rows), pos_rows, rows)
        else:
            s, n = self.sampled_bce(params, h, inputs, pos, mask, k_neg,
                                    int(self.opts.num_negatives))
        return self._with_l2(params, s, n, inputs, pos)

    def _with_l2(self, params, s, n, inputs, pos):
        if self.opts.l2_emb > 0:
            e = self.item_vectors(params, jnp.concatenate([inputs, pos], axis=1)).astype(jnp.float32)
            # + l2_emb * ||E_batch||^2 / 2 on the mean loss (loss_sum / n is what is minimised)
            s = s + float(self.opts.l2_emb) * 0.5 * jnp.sum(jnp.square(e)) * jnp.maximum(n, 1.0)
        return s, n, {}


METHODS = {'sasrec': SASRec}
