"""Transformer encoder-decoder recommender (AOS4Rec-T, paper Sec. 3.3; Vaswani et al., 2017).

Architecture (pre-LN: LayerNorm -> sublayer -> dropout -> residual add; final LayerNorm per
stack):
  encoder block = self-attention over the history (padded keys masked) + feed-forward (ReLU);
  decoder block = causal self-attention + cross-attention over the encoder output + feed-forward.
Inputs are item embeddings plus learned positional embeddings (separate tables for the
encoder and the decoder). Encoder positions are counted from the first real item
(cumsum(mask) - 1, clipped to max_history_len - 1), so extra left padding changes nothing.
Output: tied to `item_embed` (rows [:N + 1]) or a separate `output_proj`.

Decoding with a cache (`init_decode_state` / `decode_step`): per decoder layer a preallocated
self-attention KV cache [B', H, Dh, max_len] (key-major) written at index t with `lax.dynamic_update_slice`,
one row per beam / sample, and, once per user (`decoding.PerUser`: never tiled nor gathered by the
decoders), the cross-attention keys / values of the encoder output ([B, H, Dh, L]) and its mask. The n beams of a
user attend to them as n queries of one attention call (queries reshaped to [B, n, H, Dh]).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import flax.linen as nn

from aos4rec_jax import decoding
from aos4rec_jax.models import layers
from aos4rec_jax.models.dropout import Dropout

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TransformerConfig(layers.ItemVocabulary):
    """Hyper-parameters of `TransformerRec` (frozen, hashable: usable as a jit static)."""
    num_items: int                                 # N; items are 1..N, BOS = N + 1
    embed_dim: int = 128                           # model width (paper: embedding size 128)
    num_heads: int = 4                             # attention heads (embed_dim % num_heads == 0)
    num_layers: int = 2                            # blocks in the encoder and in the decoder
    mlp_dim: int = 512                             # feed-forward inner width
    dropout_rate: float = 0.1                      # embeddings, residual branches
    max_history_len: int = 50                      # encoder positions (longer: clipped)
    max_target_len: int = 10                       # decoder positions (longer: clipped)
    tie_output: bool = True                        # logits = h @ item_embed[:N + 1].T
    dtype: Any = jnp.float32                       # computation dtype (params stay float32)
    attention_dropout_rate: Optional[float] = None  # on attention weights; None = dropout_rate

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def attn_dropout(self) -> float:
        return self.dropout_rate if self.attention_dropout_rate is None else \
            self.attention_dropout_rate


def _dense(cfg: TransformerConfig, features, name: str, axis=-1) -> nn.DenseGeneral:
    return nn.DenseGeneral(features=features, axis=axis, dtype=cfg.dtype,
                           param_dtype=jnp.float32, name=name)


def _layer_norm(cfg: TransformerConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(dtype=cfg.dtype, param_dtype=jnp.float32, name=name)


class FeedForward(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = _dense(self.cfg, self.cfg.mlp_dim, 'wi')(x)
        x = nn.relu(x)
        return _dense(self.cfg, self.cfg.embed_dim, 'wo')(x)


class EncoderBlock(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array, deterministic: bool) -> Array:
        """x [B, L, D], mask [B, 1, 1, L] (True = real key)."""
        cfg = self.cfg
        h, d = cfg.num_heads, cfg.head_dim
        drop = Dropout(cfg.dropout_rate)
        y = _layer_norm(cfg, 'ln_attn')(x)
        q, k, v = jnp.moveaxis(_dense(cfg, (3, h, d), 'qkv')(y), -3, 0)
        y = layers.dot_product_attention(q, k, v, mask, Dropout(cfg.attn_dropout), deterministic)
        y = _dense(cfg, cfg.embed_dim, 'attn_out', axis=(-2, -1))(y)
        x = x + drop(y, deterministic=deterministic)
        y = _layer_norm(cfg, 'ln_mlp')(x)
        y = FeedForward(cfg, name='mlp')(y)
        return x + drop(y, deterministic=deterministic)


class DecoderBlock(nn.Module):
    """Causal self-attention + cross-attention + feed-forward, with a one-step cached variant."""
    cfg: TransformerConfig

    def setup(self):
        cfg = self.cfg
        h, d = cfg.num_heads, cfg.head_dim
        self.ln_self = _layer_norm(cfg, 'ln_self')
        self.self_qkv = _dense(cfg, (3, h, d), 'self_qkv')
        self.self_out = _dense(cfg, cfg.embed_dim, 'self_out', axis=(-2, -1))
        self.ln_cross = _layer_norm(cfg, 'ln_cross')
        self.cross_q = _dense(cfg, (h, d), 'cross_q')
        self.cross_kv_proj = _dense(cfg, (2, h, d), 'cross_kv')
        self.cross_out = _dense(cfg, cfg.embed_dim, 'cross_out', axis=(-2, -1))
        self.ln_mlp = _layer_norm(cfg, 'ln_mlp')
        self.mlp = FeedForward(cfg, name='mlp')
        self.drop = Dropout(cfg.dropout_rate)
        self.attn_drop = Dropout(cfg.attn_dropout)

    def cross_kv(self, enc_out: Array):
        """Encoder output [B, L, D] -> cross-attention keys and values, each [B, L, H, Dh]."""
        kv = self.cross_kv_proj(enc_out)
        return kv[..., 0, :, :], kv[..., 1, :, :]

    def _cross_and_mlp(self, x, attend, deterministic):
        """The cross-attention and feed-forward sublayers. attend(q [B', S, H, Dh]) -> [B', S,
        H, Dh] is the attention over the encoder's keys: `dot_product_attention` in teacher
        forcing, `key_major_attention` over the user's cached keys in a decode `step`."""
        q = self.cross_q(self.ln_cross(x))
        x = x + self.drop(self.cross_out(attend(q)), deterministic=deterministic)
        y = self.mlp(self.ln_mlp(x))
        return x + self.drop(y, deterministic=deterministic)

    def __call__(self, x: Array, cross_k: Array, cross_v: Array, enc_mask: Array,
                 deterministic: bool, self_mask: Optional[Array] = None) -> Array:
        """Teacher forcing. x [B, T, D]; enc_mask [B, 1, 1, L]; self_mask [T, T] bool (query,
        key; True = may attend) or None = causal."""
        t = x.shape[1]
        if self_mask is None:
            self_mask = jnp.tril(jnp.ones((t, t), jnp.bool_))
        y = self.ln_self(x)
        q, k, v = jnp.moveaxis(self.self_qkv(y), -3, 0)
        y = layers.dot_product_attention(q, k, v, self_mask[None, None], self.attn_drop,
                                         deterministic)
        x = x + self.drop(self.self_out(y), deterministic=deterministic)
        return self._cross_and_mlp(
            x, lambda q: layers.dot_product_attention(q, cross_k, cross_v, enc_mask,
                                                      self.attn_drop, deterministic),
            deterministic)

    def step(self, x: Array, cache: dict, cross: dict, enc_mask: Array, t: Array):
        """One cached step. x [B', 1, D] (B' = B * n: n rows per user); cache holds self_k /
        self_v [B', H, Dh, M]; cross holds the user's k / v [B, H, Dh, L]; enc_mask [B, 1, 1, L];
        t int32 scalar (0 <= t < M). Keys and values are kept in the layout of the attention's
        products ([.., H, Dh, keys]), so no step transposes them (see `init_decode_state`)."""
        y = self.ln_self(x)
        q, k, v = jnp.moveaxis(self.self_qkv(y), -3, 0)          # each [B', 1, H, Dh]
        zero = jnp.zeros((), jnp.int32)
        idx = (zero, zero, zero, t)
        dtype = cache['self_k'].dtype
        self_k = jax.lax.dynamic_update_slice(cache['self_k'], layers.key_major(k).astype(dtype), idx)
        self_v = jax.lax.dynamic_update_slice(cache['self_v'], layers.key_major(v).astype(dtype), idx)
        valid = (jnp.arange(self_k.shape[-1]) <= t)[None, None, None, :]
        y = layers.key_major_attention(q, self_k, self_v, valid)
        x = x + self.self_out(y)

        def attend(q):                        # q [B', 1, H, Dh]: the n rows of a user are n
            b = cross['k'].shape[0]           # queries of one attention over that user's keys
            return layers.key_major_attention(q.reshape((b, -1) + q.shape[2:]), cross['k'],
                                              cross['v'], enc_mask).reshape(q.shape)
        return self._cross_and_mlp(x, attend, True), {'self_k': self_k, 'self_v': self_v}


class TransformerRec(layers.ItemTable, nn.Module):
    """Seq2seq Transformer recommender; see the module docstring and docs/DESIGN.md."""
    cfg: TransformerConfig

    def setup(self):
        cfg = self.cfg
        self.item_embed = layers.item_embedding(cfg.num_items, cfg.embed_dim, cfg.dtype)
        self.enc_pos_embed = nn.Embed(cfg.max_history_len, cfg.embed_dim, dtype=cfg.dtype,
                                      param_dtype=jnp.float32, name='encoder_pos_embed')
        self.dec_pos_embed = nn.Embed(cfg.max_target_len, cfg.embed_dim, dtype=cfg.dtype,
                                      param_dtype=jnp.float32, name='decoder_pos_embed')
        self.encoder_blocks = [EncoderBlock(cfg, name=f'encoder_{i}') for i in range(cfg.num_layers)]
        self.encoder_norm = _layer_norm(cfg, 'encoder_norm')
        self.decoder_blocks = [DecoderBlock(cfg, name=f'decoder_{i}') for i in range(cfg.num_layers)]
        self.decoder_norm = _layer_norm(cfg, 'decoder_norm')
        self.drop = Dropout(cfg.dropout_rate)
        if not cfg.tie_output:
            self.output_proj = layers.OutputProjection(cfg.vocab_size, cfg.num_embeddings, cfg.dtype,
                                                       name='output_proj')

    # -- pieces ---------------------------------------------------------------------------------
    def encode(self, history: Array, train: bool = False):
        """history [B, L] -> (encoder output [B, L, D], mask [B, L] bool)."""
        cfg = self.cfg
        mask = layers.history_mask(history)
        pos = layers.history_positions(mask, cfg.max_history_len)
        x = self._embed_items(history) + self.enc_pos_embed(pos)
        x = self.drop(x, deterministic=not train)
        attn_mask = mask[:, None, None, :]
        for block in self.encoder_blocks:
            x = block(x, attn_mask, not train)
        return self.encoder_norm(x), mask

    def _dec_positions(self, t):
        return jnp.minimum(t, self.cfg.max_target_len - 1)

    # -- model contract ---------------------------------------------------------------------------
    def __call__(self, history: Array, dec_inputs: Array, train: bool = False) -> Array:
        """Teacher forcing: history [B, L], dec_inputs [B, T] -> float32 logits [B, T, N + 1]."""
        return self._logits(self.decoder_hidden(history, dec_inputs, train))

    def decoder_hidden(self, history: Array, dec_inputs: Array, train: bool = False) -> Array:
        """Teacher forcing up to the output layer: [B, T, D], whose product with the output table
        (seq2seq.output_table) gives the logits (the chunked loss, config.loss_chunk)."""
        return self.features(history, self.embed_items(dec_inputs), train=train)

    def embed_items(self, ids: Array) -> Array:
        """Item ids -> their rows of the item table (the decoder's input embeddings)."""
        return self._embed_items(ids)

    def features(self, history: Array, dec_embeds: Array, positions: Optional[Array] = None,
                 self_mask: Optional[Array] = None, train: bool = False,
                 encoded: Optional[tuple] = None) -> Array:
        """Decoder outputs before the output layer, [B, S, D].

        dec_embeds [B, S, D]: input embeddings (`embed_items`); positions [S] int (default
        0..S-1); self_mask [S, S] bool (default causal); encoded: `encode(history, train)`'s
        output when the caller has it (the critic decodes several lists of one history against
        one encoding), else computed here. The critic (aos4rec_jax/critic.py) uses positions and
        mask to score several continuations of one prefix in one pass."""
        enc_out, mask = self.encode(history, train) if encoded is None else encoded
        enc_mask = mask[:, None, None, :]
        if positions is None:
            positions = jnp.arange(dec_embeds.shape[1])
        x = dec_embeds + self.dec_pos_embed(self._dec_positions(positions))
        x = self.drop(x, deterministic=not train)
        for block in self.decoder_blocks:
            ck, cv = block.cross_kv(enc_out)
            x = block(x, ck, cv, enc_mask, not train, self_mask)
        return self.decoder_norm(x)

    def init_decode_state(self, history: Array, max_len: int) -> dict:
        """Encodes the history once. Returns {'user': decoding.PerUser({'enc_mask' [B, L] bool,
        'cross': tuple per decoder layer of {'k', 'v'} [B, H, Dh, L]}), 'layers': tuple per
        decoder layer of {'self_k', 'self_v' [B, H, Dh, max_len] (zeros)}}. Keys and values are
        stored key-major, as the attention's products read them: in [B, L, H, Dh] every step of
        a beam search transposed all of them (profiled: 7% of a beam-5 call at the ML-20M
        size, docs/benchmarks.md). The decoders tile and
        gather 'layers' only. `max_len` (Python int) = number of decode steps the cache can
        hold."""
        cfg = self.cfg
        enc_out, mask = self.encode(history, train=False)
        b = history.shape[0]
        cache_shape = (b, cfg.num_heads, cfg.head_dim, int(max_len))
        cross, per_layer = [], []
        for block in self.decoder_blocks:
            ck, cv = block.cross_kv(enc_out)
            cross.append({'k': layers.key_major(ck), 'v': layers.key_major(cv)})
            per_layer.append({'self_k': jnp.zeros(cache_shape, cfg.dtype),
                              'self_v': jnp.zeros(cache_shape, cfg.dtype)})
        return {'user': decoding.PerUser({'enc_mask': mask, 'cross': tuple(cross)}),
                'layers': tuple(per_layer)}

    def decode_step(self, state: dict, prev_items: Array, t: Array):
        """prev_items [B'] (BOS at t = 0), t int32 scalar -> (logits [B', N + 1] f32, new state).
        B' = B * n rows (n beams / samples per user, user-major) against the B users' 'user'
        part of the state."""
        t = jnp.asarray(t, jnp.int32)
        x = self._embed_items(prev_items[:, None]) + self.dec_pos_embed(self._dec_positions(t))
        user = state['user'].value
        enc_mask = user['enc_mask'][:, None, None, :]
        new_layers = []
        for block, cache, cross in zip(self.decoder_blocks, state['layers'], user['cross']):
            x, cache = block.step(x, cache, cross, enc_mask, t)
            new_layers.append(cache)
        logits = self._step_logits(self.decoder_norm(x))[:, 0]
        return logits, {'user': state['user'], 'layers': tuple(new_layers)}
