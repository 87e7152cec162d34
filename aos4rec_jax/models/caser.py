"""Caser: Convolutional Sequence Embedding Recommendation (Tang & Wang, WSDM 2018).

Next-item network (docs/DESIGN.md, "Next-item network contract"); represents the end of the
sequence only: h [B, 2d].

  E = item_embed[last L items]                      [B, L, d]   (the "image" of the window)
  horizontal: for each height i in 1..L, nh filters [i, d] -> ReLU -> max-pool over time
                                                    -> [B, nh * L]
  vertical:   nv filters [L, 1] (a weighted sum of the L rows each; no activation)
                                                    -> [B, nv * d]
  z = ReLU(W1 dropout([vertical; horizontal]) + b1) [B, d]
  h = [z; P_u]                                      [B, 2d]   (P_u: the user's embedding)
  score(i) = h . W2[i] + b2[i]                      (W2 `output_item_embed` [rows, 2d],
                                                     b2 `output_item_bias`; not tied)

As the authors' code (github.com/graytowne/caser_pytorch): vertical output flattened filter
major, dropout on the concatenation, ReLU after fc1; embeddings ~ N(0, 1/d), W2 ~ N(0, 1/2d),
b2 = 0. Only the last L items of `seq` are read (an input shorter than L is left-padded).
Padding inside the window enters the convolutions as a zero vector (the padding row of the
table is never read). Users: `users` [B] rows of `user_embed` [num_users, d]; a user outside
0..num_users-1 (-1: a history the data set has never seen) gets a zero user vector.

Paper defaults: L = 5, T = 3 targets (the method's concern), d = 50, nv = 4, nh = 16,
dropout 0.5, ReLU for both the convolutions and the fully connected layer.
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
class CaserConfig(layers.ItemVocabulary):
    """Hyper-parameters of `Caser` (frozen, hashable: usable as a jit static)."""
    num_items: int                 # N; items are 1..N, 0 = padding
    num_users: int = 0             # rows of `user_embed` (users 0..num_users-1)
    max_len: int = 5               # L: the window of last items
    embed_dim: int = 50            # d (h has 2d features)
    num_vertical: int = 4          # nv
    num_horizontal: int = 16       # nh, for each height 1..L
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32       # computation dtype (params stay float32)

    @property
    def output_dim(self) -> int:
        """Features of h and of the output item vectors: 2d."""
        return 2 * self.embed_dim


def last_window(seq: Array, length: int) -> Array:
    """The last `length` columns of a left-padded seq [B, L'] (padded with 0 if L' < length)."""
    if seq.shape[1] >= length:
        return seq[:, seq.shape[1] - length:]
    return jnp.pad(seq, ((0, 0), (length - seq.shape[1], 0)))


def user_vectors(table: Array, users: Array, dtype) -> Array:
    """Rows of `table` [U, d] for users [B]; a zero vector for users outside 0..U-1 (or U = 0)."""
    num_users = table.shape[0]
    valid = (users >= 0) & (users < num_users)
    if num_users == 0:
        return jnp.zeros(users.shape + table.shape[1:], dtype)
    rows = layers.lookup(table, jnp.where(valid, users, 0), dtype)
    return jnp.where(valid[..., None], rows, jnp.zeros((), dtype))


class Caser(layers.BiasedItemScores, nn.Module):
    """Caser next-item network; see the module docstring and docs/DESIGN.md."""
    cfg: CaserConfig
    per_position = False
    OUTPUT_TABLE = 'output_item_embed'      # layers.BiasedItemScores: not the input table

    def setup(self):
        cfg = self.cfg
        d, length = cfg.embed_dim, cfg.max_len
        rows = layers.num_embedding_rows(cfg.num_items)
        self.item_embed = nn.Embed(rows, d, dtype=cfg.dtype, param_dtype=jnp.float32,
                                   embedding_init=nn.initializers.normal(1.0 / d),
                                   name='item_embed')
        self.user_embed = self.param('user_embed', nn.initializers.normal(1.0 / d),
                                     (cfg.num_users, d), jnp.float32)
        self.conv_h = [nn.Conv(cfg.num_horizontal, kernel_size=(i,), padding='VALID',
                               dtype=cfg.dtype, param_dtype=jnp.float32, name=f'conv_h_{i}')
                       for i in range(1, length + 1)]
        self.conv_v_kernel = self.param('conv_v_kernel', nn.initializers.lecun_normal(),
                                        (length, cfg.num_vertical), jnp.float32)
        self.conv_v_bias = self.param('conv_v_bias', nn.initializers.zeros_init(),
                                      (cfg.num_vertical,), jnp.float32)
        self.fc1 = nn.Dense(d, dtype=cfg.dtype, param_dtype=jnp.float32, name='fc1')
        self.output_item_embed = nn.Embed(rows, 2 * d, dtype=cfg.dtype, param_dtype=jnp.float32,
                                          embedding_init=nn.initializers.normal(1.0 / (2 * d)),
                                          name='output_item_embed')
        self.output_item_bias = self.param('output_item_bias', nn.initializers.zeros_init(),
                                           (rows,), jnp.float32)
        self.drop = Dropout(cfg.dropout_rate)

    def encode(self, seq: Array, users: Array, train: bool = False) -> Array:
        """seq [B, L'] left-padded (the last max_len items are used), users [B] -> h [B, 2d]."""
        cfg = self.cfg
        window = last_window(seq, cfg.max_len)                          # [B, L]
        mask = window > 0
        e = layers.lookup(self.item_embed.embedding, window, cfg.dtype)
        e = e * mask[..., None].astype(e.dtype)                          # [B, L, d]
        b = e.shape[0]
        # vertical: out_v[b, f, k] = sum_t w[t, f] e[b, t, k] + bias[f] -> [B, nv * d]
        out_v = jnp.einsum('btk,tf->bfk', e, self.conv_v_kernel.astype(cfg.dtype))
        out_v = out_v + self.conv_v_bias.astype(cfg.dtype)[None, :, None]
        out_v = out_v.reshape(b, -1)
        # horizontal: height i, nh filters spanning all d columns -> ReLU -> max over time
        out_h = [jnp.max(nn.relu(conv(e)), axis=1) for conv in self.conv_h]   # each [B, nh]
        out = jnp.concatenate([out_v] + out_h, axis=-1)
        out = self.drop(out, deterministic=not train)
        z = nn.relu(self.fc1(out))                                       # [B, d]
        u = user_vectors(self.user_embed, jnp.asarray(users), cfg.dtype)
        return jnp.concatenate([z, u.astype(z.dtype)], axis=-1)

    def __call__(self, seq: Array, users: Array, train: bool = False) -> Array:
        """= encode; also touches the output layer so that `init` creates it."""
        h = self.encode(seq, users, train)
        zero = jnp.zeros((), jnp.int32)
        self.item_vectors(zero), self.item_bias(zero)
        return h
