"""SASRec: Self-Attentive Sequential Recommendation (Kang & McAuley, ICDM 2018).

Next-item network (docs/DESIGN.md, "Next-item network contract"); per position, causal.

  E = item_embed[seq] * sqrt(d) + pos_embed[position];  dropout;  E *= mask   (timeline mask)
  num_blocks times (as the authors' code, github.com/kang205/SASRec):
      Q = LayerNorm(x)
      x = Q + MultiHeadAttention(Q, x, x)    causal, keys at padding masked, dropout on weights
      x = LayerNorm(x)
      x = x + FFN(x)                         Dense(d) -> ReLU -> dropout -> Dense(d) -> dropout
      x *= mask
  h = LayerNorm(x)                           [B, L, D]; h[:, i] depends on seq[:, :i+1] only.

Attention: per head Q W_Q, x W_K, x W_V (Dense with bias); the heads are concatenated without
an output projection (the paper's and the TF code's layer). Queries at padding positions see
no key (all-zero weights) and are zeroed by the timeline mask anyway, so neither the padding
ids nor the padding row of the table reach a real position; h at padding positions is
LayerNorm(0) (= its bias), meaningless, and ignored by the losses.

Positions are absolute and counted from the right end of a `max_len` window: an input of
length L <= max_len gets positions max_len - L .. max_len - 1, i.e. exactly what it would get
left-padded to max_len (the authors always feed max_len items, left-padded).

style='bert' is the network of the S3-Rec repository's SASRec (modules.py, as we read it), whose
all-items figures the next-item table compares with: E = LayerNorm(item_embed[seq] +
pos_embed[position]) (no sqrt(d) scale), dropout, timeline mask; blocks with post-norm residuals
(x = LN(x + Dropout(Dense(MHA(x, x, x)))); x = LN(x + Dropout(Dense(GELU(Dense_4d(x)))))), no
final norm (`BertBlock`). Same attention masks, positions and tied output.

Output: tied to the input item table (`item_embed`, rows [:N + 1]), no bias:
score(i) = h . item_embed[i] (the paper's r_{i,t} = F_t M_i^T with shared M).

Paper defaults: d = 50, num_blocks = 2, heads = 1, dropout 0.2 (ML-1M; 0.5 on the sparse data
sets), max_len 200 (ML-1M) / 50 (others); Adam lr 1e-3, batch 128 (the method's concern).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from aos4rec_jax.models import layers
from aos4rec_jax.models.dropout import Dropout

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SASRecConfig(layers.ItemVocabulary):
    """Hyper-parameters of `SASRec` (frozen, hashable: usable as a jit static)."""
    num_items: int                 # N; items are 1..N, 0 = padding
    max_len: int = 50              # L: positions (inputs longer than this are rejected)
    embed_dim: int = 50            # d
    num_blocks: int = 2
    num_heads: int = 1
    dropout_rate: float = 0.2      # embeddings, attention weights, FFN
    style: str = 'sasrec'          # 'sasrec' (the paper's network) or 'bert' (the S3-Rec code's)
    dtype: Any = jnp.float32       # computation dtype (params stay float32)

    def __post_init__(self):
        if self.style not in ('sasrec', 'bert'):
            raise ValueError(f"SASRecConfig.style must be 'sasrec' or 'bert', got {self.style!r}")


def absolute_positions(length: int, max_len: int) -> Array:
    """Positions of a left-padded window of `length` <= max_len, counted from the right end."""
    if length > max_len:
        raise ValueError(f'sequence length {length} exceeds max_len={max_len}')
    return jnp.arange(length) + (max_len - length)


def _dense(cfg: SASRecConfig, features, name: str) -> nn.DenseGeneral:
    return nn.DenseGeneral(features=features, dtype=cfg.dtype, param_dtype=jnp.float32, name=name)


def _layer_norm(cfg: SASRecConfig, epsilon: float, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=epsilon, dtype=cfg.dtype, param_dtype=jnp.float32, name=name)


def _causal_attention(cfg: SASRecConfig, q_in: Array, kv_in: Array, mask: Array, drop: Dropout,
                      deterministic: bool, band=None) -> Array:
    """Both blocks' attention, called inside a block (its 'query', 'key' and 'value' Dense
    layers): queries from q_in, keys and values from kv_in [B, L, D], causal, keys at padding
    masked, dropout on the weights -> [B, L, D], the heads concatenated.

    band = (mask [n, 1, W, 2W], chunks_per_group): q_in and kv_in are a packed stream in chunks
    [n, W, D] (`SASRec.encode_packed`); each chunk's queries see the keys of the chunk before it
    and its own (`layers.band_keys`), as `mask` allows."""
    h, dh = cfg.num_heads, cfg.embed_dim // cfg.num_heads
    q = _dense(cfg, (h, dh), 'query')(q_in)
    k = _dense(cfg, (h, dh), 'key')(kv_in)
    v = _dense(cfg, (h, dh), 'value')(kv_in)
    if band is None:
        length = kv_in.shape[1]
        causal = jnp.tril(jnp.ones((length, length), jnp.bool_))
        attn_mask = causal[None, None] & mask[:, None, None, :]             # [B, 1, Lq, Lk]
    else:
        attn_mask, per_group = band
        k, v = layers.band_keys(k, per_group), layers.band_keys(v, per_group)
    y = layers.dot_product_attention(q, k, v, attn_mask, drop, deterministic)
    return y.reshape(y.shape[:2] + (cfg.embed_dim,))


class SASRecBlock(nn.Module):
    cfg: SASRecConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array, deterministic: bool, band=None) -> Array:
        """x [B, L, D] (zero at padding), mask [B, L] bool; band: see `_causal_attention`."""
        cfg = self.cfg
        drop = Dropout(cfg.dropout_rate)
        q_in = _layer_norm(cfg, 1e-8, 'ln_attn')(x)
        x = q_in + _causal_attention(cfg, q_in, x, mask, drop, deterministic, band)
        x = _layer_norm(cfg, 1e-8, 'ln_ffn')(x)
        y = nn.relu(_dense(cfg, cfg.embed_dim, 'ffn_1')(x))
        y = drop(y, deterministic=deterministic)
        y = drop(_dense(cfg, cfg.embed_dim, 'ffn_2')(y), deterministic=deterministic)
        x = x + y
        return x * mask[..., None].astype(x.dtype)


class BertBlock(nn.Module):
    """The S3-Rec repository's SASRec layer (its modules.py, BERT-style): post-norm residuals,
    an output projection after attention, a 4d GELU feed-forward, dropout on the attention
    weights and after each sublayer."""
    cfg: SASRecConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array, deterministic: bool, band=None) -> Array:
        cfg = self.cfg
        drop = Dropout(cfg.dropout_rate)
        y = _dense(cfg, cfg.embed_dim, 'attn_out')(
            _causal_attention(cfg, x, x, mask, drop, deterministic, band))
        x = _layer_norm(cfg, 1e-12, 'ln_attn')(x + drop(y, deterministic=deterministic))
        y = nn.gelu(_dense(cfg, 4 * cfg.embed_dim, 'ffn_1')(x), approximate=False)
        y = drop(_dense(cfg, cfg.embed_dim, 'ffn_2')(y), deterministic=deterministic)
        x = _layer_norm(cfg, 1e-12, 'ln_ffn')(x + y)
        return x * mask[..., None].astype(x.dtype)


class SASRec(layers.TiedItemScores, nn.Module):
    """SASRec next-item network; see the module docstring and docs/DESIGN.md."""
    cfg: SASRecConfig
    per_position = True

    def setup(self):
        cfg = self.cfg
        self.item_embed = layers.item_embedding(cfg.num_items, cfg.embed_dim, cfg.dtype)
        self.pos_embed = nn.Embed(cfg.max_len, cfg.embed_dim, dtype=cfg.dtype,
                                  param_dtype=jnp.float32, name='pos_embed')
        block = SASRecBlock if cfg.style == 'sasrec' else BertBlock
        self.blocks = [block(cfg, name=f'block_{i}') for i in range(cfg.num_blocks)]
        # the one layer norm outside the blocks: 'sasrec' on the last block's output
        # ('final_norm'), 'bert' on the input embeddings ('input_norm')
        self.norm = (_layer_norm(cfg, 1e-8, 'final_norm') if cfg.style == 'sasrec'
                     else _layer_norm(cfg, 1e-12, 'input_norm'))
        self.drop = Dropout(cfg.dropout_rate)

    def encode(self, seq: Array, users: Array = None, train: bool = False) -> Array:
        """seq [B, L] left-padded (users unused) -> h [B, L, D]."""
        del users
        pos = absolute_positions(seq.shape[1], self.cfg.max_len)
        return self._encode(seq, pos, seq > 0, train)

    def encode_packed(self, items: Array, column: Array, segment: Array, chunks_per_group: int,
                      train: bool = False) -> Array:
        """The same network on a packed stream: the real items of a batch of left-padded rows
        [B, L], end to end in chunks items [n, W] (W = L; n = groups x chunks_per_group), each
        with its column of the row (column [n, W]: its position is column + max_len - L) and
        its row (segment [n, W], -1 at filler) -> h [n, W, D]. At the real items, h equals
        `encode`'s at the same row and column (dropout aside: its masks are drawn in this
        layout), for a fraction of the work when most of [B, L] is padding."""
        pos = column + (self.cfg.max_len - items.shape[1])
        band = (layers.band_mask(segment, column, chunks_per_group), chunks_per_group)
        return self._encode(items, pos, segment >= 0, train, band)

    def _encode(self, seq, pos, mask, train, band=None):
        """pos: [L] (every row's positions) or seq's shape."""
        cfg = self.cfg
        pe = self.pos_embed(pos)
        pe = pe[None] if pos.ndim == 1 else pe
        if cfg.style == 'sasrec':
            x = self.item_vectors(seq) * jnp.asarray(math.sqrt(cfg.embed_dim), cfg.dtype)
            x = x + pe
        else:                                   # no sqrt(d) scale; a norm on the input
            x = self.norm(self.item_vectors(seq) + pe)
        x = self.drop(x, deterministic=not train)
        x = x * mask[..., None].astype(x.dtype)
        for block in self.blocks:
            x = block(x, mask, not train, band)
        return self.norm(x) if cfg.style == 'sasrec' else x

    def __call__(self, seq: Array, users: Array = None, train: bool = False) -> Array:
        """= encode; every parameter exists after `init`."""
        return self.encode(seq, users, train)
