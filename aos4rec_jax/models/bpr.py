"""BPR-MF: matrix factorisation trained with Bayesian Personalized Ranking (Rendle et al.,
UAI 2009).

Next-item network (docs/DESIGN.md, "Next-item network contract"); represents the user (the end
of the sequence's owner) only: h [B, D].

  x_ui = <w_u, h_i> + b_i        W = user factors `user_embed` [num_users, d],
                                 H = item factors `item_embed` [rows, d], b = `output_item_bias`
  encode(seq, users) = w_u                         for a known user 0 <= u < num_users
                     = mean of h_i over the real items of seq   (fold-in) for users = -1 (a
                       history the model never saw; also any u outside 0..num_users-1);
                       a zero vector if seq has no real item
  item_vectors = item factors, item_bias = b: score(i) = h . h_i + b_i

The item bias is the usual addition to Rendle's x_ui = <w_u, h_i> (it is not in the 2009 paper:
init 0, and a method may keep it at 0 by not training it). The item order in `seq` is ignored.
`dropout_rate` (default 0, as the paper) drops features of h in training.

Paper / defaults: d = 64 factors, initialisation N(0, 0.1^2); regularisation and the sampling
of (u, i, j) triples (LearnBPR) are the method's concern.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from aos4rec_jax.models import layers
from aos4rec_jax.models.dropout import Dropout

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class BPRMFConfig(layers.ItemVocabulary):
    """Hyper-parameters of `BPRMF` (frozen, hashable: usable as a jit static)."""
    num_items: int                 # N; items are 1..N, 0 = padding
    num_users: int = 0             # rows of `user_embed` (users 0..num_users-1)
    max_len: int = 50              # L: history window the method feeds for the fold-in
    embed_dim: int = 64            # d (factors)
    dropout_rate: float = 0.0      # on h in training (paper: none)
    init_std: float = 0.1          # factors ~ N(0, init_std^2)
    dtype: Any = jnp.float32       # computation dtype (params stay float32)


class BPRMF(layers.BiasedItemScores, nn.Module):
    """BPR-MF next-item network; see the module docstring and docs/DESIGN.md."""
    cfg: BPRMFConfig
    per_position = False

    def setup(self):
        cfg = self.cfg
        rows = layers.num_embedding_rows(cfg.num_items)
        init = nn.initializers.normal(cfg.init_std)
        self.item_embed = nn.Embed(rows, cfg.embed_dim, dtype=cfg.dtype, param_dtype=jnp.float32,
                                   embedding_init=init, name='item_embed')
        self.user_embed = self.param('user_embed', init, (cfg.num_users, cfg.embed_dim),
                                     jnp.float32)
        self.output_item_bias = self.param('output_item_bias', nn.initializers.zeros_init(),
                                           (rows,), jnp.float32)
        self.drop = Dropout(cfg.dropout_rate)

    def fold_in(self, seq: Array) -> Array:
        """seq [B, L] -> the mean item factor of each row's real items [B, D] (0 if none)."""
        mask = (seq > 0).astype(jnp.float32)
        items = self.item_embed.embedding.astype(jnp.float32)
        vecs = jnp.take(items, seq, axis=0, mode='clip') * mask[..., None]
        mean = jnp.sum(vecs, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)[:, None]
        return mean.astype(self.cfg.dtype)

    def encode(self, seq: Array, users: Array, train: bool = False) -> Array:
        """seq [B, L] left-padded, users [B] (-1 = unknown: fold-in) -> h [B, D]."""
        cfg = self.cfg
        users = jnp.asarray(users, jnp.int32)
        known = (users >= 0) & (users < cfg.num_users)
        h = self.fold_in(seq)
        if cfg.num_users > 0:
            rows = layers.lookup(self.user_embed, jnp.where(known, users, 0), cfg.dtype)
            h = jnp.where(known[:, None], rows, h)
        return self.drop(h, deterministic=not train)

    def __call__(self, seq: Array, users: Array, train: bool = False) -> Array:
        """= encode; every parameter exists after `init`."""
        return self.encode(seq, users, train)
