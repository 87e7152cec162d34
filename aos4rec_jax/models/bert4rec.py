"""BERT4Rec (Sun et al., CIKM 2019): Sequential Recommendation with Bidirectional Encoder
Representations from Transformer.

Next-item network (docs/DESIGN.md, "Next-item network contract"); per position,
bidirectional: h[:, i] depends on the whole sequence (every real item; padding is masked).

  x = item_embed[seq] + pos_embed[position];  LayerNorm;  dropout
  num_blocks post-LN Transformer blocks (as BERT, github.com/FeiSun/BERT4Rec):
      a = LayerNorm(x + dropout(Dense(MultiHeadAttention(x))))   keys at padding masked,
                                                                 dropout on the weights
      x = LayerNorm(a + dropout(Dense_d(GELU(Dense_4d(a)))))
  h = LayerNorm(GELU(Dense_d(x)))            the masked-LM output head's transform, [B, L, D]
  score(i) = h . item_embed[i] + output_item_bias[i]    (tied table, output bias)

The output head's transform is part of `encode`, so `score_all(h) = h @ item_vectors.T +
item_bias` holds as for every next-item network. The mask token ([MASK]) is item id N + 1
(`mask_id`): the item table has N + 2 rows rounded up to 128 (`layers.num_embedding_rows`),
its scores are not among the N + 1 outputs. Cloze masking (mask proportion rho) and the
appended [MASK] at prediction time are the method's concern.

Positions are absolute and counted from the right end of a `max_len` window (an input of
length L <= max_len gets positions max_len - L .. max_len - 1), so the last (predicted)
position always has position max_len - 1 and extra left padding changes nothing. (The authors
right-pad and count from the first item; with left padding counting from the right keeps the
[MASK] at a fixed position.)

Paper defaults: d = 64, 2 blocks, 2 heads, FFN 4d = 256 with GELU, dropout 0.1 (hidden and
attention; the authors' configuration files: hidden 0.5 / attention 0.2 on Beauty, 0.2 / 0.2 on
ML-1M; `attention_dropout_rate` < 0 takes `dropout_rate`), max_len 200 (ML-1M, ML-20m) / 50
(Beauty, Steam), initializer truncated N(0, 0.02), LayerNorm eps 1e-12 (BERT), mask proportion
rho = 0.2 (ML-1M).
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
class BERT4RecConfig(layers.ItemVocabulary):
    """Hyper-parameters of `BERT4Rec` (frozen, hashable: usable as a jit static)."""
    num_items: int                 # N; items are 1..N, 0 = padding, N + 1 = [MASK]
    max_len: int = 50              # L: positions (inputs longer than this are rejected)
    embed_dim: int = 64            # d
    num_blocks: int = 2
    num_heads: int = 2
    mlp_dim: int = 256             # FFN inner width (4d)
    dropout_rate: float = 0.1      # hidden dropout (embeddings, sub-layer outputs)
    attention_dropout_rate: float = -1.0   # on the attention weights; < 0: = dropout_rate
    initializer_range: float = 0.02
    dtype: Any = jnp.float32       # computation dtype (params stay float32)

    @property
    def mask_id(self) -> int:
        """The [MASK] token: N + 1."""
        return self.num_items + 1


def _init(cfg: BERT4RecConfig):
    return nn.initializers.truncated_normal(cfg.initializer_range)


def _dense(cfg: BERT4RecConfig, features, name: str, axis=-1) -> nn.DenseGeneral:
    return nn.DenseGeneral(features=features, axis=axis, dtype=cfg.dtype, param_dtype=jnp.float32,
                           kernel_init=_init(cfg), name=name)


def _layer_norm(cfg: BERT4RecConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=1e-12, dtype=cfg.dtype, param_dtype=jnp.float32, name=name)


def _gelu(x: Array) -> Array:
    return nn.gelu(x, approximate=False)     # BERT4Rec's TF code: the erf form


class BERT4RecBlock(nn.Module):
    cfg: BERT4RecConfig

    @nn.compact
    def __call__(self, x: Array, attn_mask: Array, deterministic: bool,
                 chunks_per_group: int = 0) -> Array:
        """x [B, L, D], attn_mask [B, 1, 1, L] (True = real key). chunks_per_group > 0: x is a
        packed stream in chunks [n, W, D] (`BERT4Rec.encode_packed`), whose queries see the keys
        of the chunks before and after theirs and their own, attn_mask [n, 1, W, 3W]."""
        cfg = self.cfg
        h, dh = cfg.num_heads, cfg.embed_dim // cfg.num_heads
        drop = Dropout(cfg.dropout_rate)
        attn_rate = cfg.attention_dropout_rate
        # the same module (and dropout random numbers as before the option) at the same rate
        same = attn_rate < 0 or attn_rate == cfg.dropout_rate
        attn_drop = drop if same else Dropout(attn_rate)
        q, k, v = jnp.moveaxis(_dense(cfg, (3, h, dh), 'qkv')(x), -3, 0)
        if chunks_per_group:
            k = layers.band_keys(k, chunks_per_group, both_sides=True)
            v = layers.band_keys(v, chunks_per_group, both_sides=True)
        y = layers.dot_product_attention(q, k, v, attn_mask, attn_drop, deterministic)
        y = _dense(cfg, cfg.embed_dim, 'attn_out', axis=(-2, -1))(y)
        a = _layer_norm(cfg, 'ln_attn')(x + drop(y, deterministic=deterministic))
        y = _gelu(_dense(cfg, cfg.mlp_dim, 'ffn_1')(a))
        y = _dense(cfg, cfg.embed_dim, 'ffn_2')(y)
        return _layer_norm(cfg, 'ln_ffn')(a + drop(y, deterministic=deterministic))


class BERT4Rec(layers.BiasedItemScores, nn.Module):
    """BERT4Rec next-item network; see the module docstring and docs/DESIGN.md."""
    cfg: BERT4RecConfig
    per_position = True

    def setup(self):
        cfg = self.cfg
        rows = layers.num_embedding_rows(cfg.num_items)      # N + 2 ([MASK] = N + 1), rounded
        self.item_embed = nn.Embed(rows, cfg.embed_dim, dtype=cfg.dtype, param_dtype=jnp.float32,
                                   embedding_init=_init(cfg), name='item_embed')
        self.pos_embed = nn.Embed(cfg.max_len, cfg.embed_dim, dtype=cfg.dtype,
                                  param_dtype=jnp.float32, embedding_init=_init(cfg),
                                  name='pos_embed')
        self.embed_norm = _layer_norm(cfg, 'embed_norm')
        self.blocks = [BERT4RecBlock(cfg, name=f'block_{i}') for i in range(cfg.num_blocks)]
        self.head_dense = _dense(cfg, cfg.embed_dim, 'head_dense')
        self.head_norm = _layer_norm(cfg, 'head_norm')
        self.output_item_bias = self.param('output_item_bias', nn.initializers.zeros_init(),
                                           (rows,), jnp.float32)
        self.drop = Dropout(cfg.dropout_rate)

    def encode(self, seq: Array, users: Array = None, train: bool = False) -> Array:
        """seq [B, L] left-padded, may hold [MASK] = N + 1 (users unused) -> h [B, L, D]."""
        del users
        cfg = self.cfg
        length = seq.shape[1]
        if length > cfg.max_len:
            raise ValueError(f'sequence length {length} exceeds max_len={cfg.max_len}')
        mask = seq > 0
        pos = jnp.arange(length) + (cfg.max_len - length)
        return self._encode(seq, self.pos_embed(pos)[None], mask[:, None, None, :], train)

    def encode_packed(self, items: Array, column: Array, segment: Array, chunks_per_group: int,
                      train: bool = False) -> Array:
        """The same network on a packed stream (docs/DESIGN.md, "Packed sequences"): the real
        items of a batch of left-padded rows [B, L] ([MASK] included), end to end in chunks
        items [n, W] (W = L), each with its column of the row (column [n, W]) and its row
        (segment [n, W], -1 at filler) -> h [n, W, D], equal at the real items to `encode`'s at
        the same row and column (dropout aside: its masks are drawn in this layout)."""
        pos = column + (self.cfg.max_len - items.shape[1])
        attn_mask = layers.band_mask(segment, column, chunks_per_group, causal=False)
        return self._encode(items, self.pos_embed(pos), attn_mask, train, chunks_per_group)

    def _encode(self, seq, pos_vectors, attn_mask, train, chunks_per_group=0):
        x = layers.lookup(self.item_embed.embedding, seq, self.cfg.dtype) + pos_vectors
        x = self.drop(self.embed_norm(x), deterministic=not train)
        for block in self.blocks:
            x = block(x, attn_mask, not train, chunks_per_group)
        return self.head_norm(_gelu(self.head_dense(x)))

    def __call__(self, seq: Array, users: Array = None, train: bool = False) -> Array:
        """= encode; every parameter exists after `init` (the bias is created in setup)."""
        return self.encode(seq, users, train)
