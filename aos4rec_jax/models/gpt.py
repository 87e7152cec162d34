"""GPT-style decoder-only recommender: GPT-2 as in "Autoregressive generation strategies for
long-term sequential recommendations" (Volodkevich et al., arXiv:2409.17730; seed 001).

One causal Transformer reads the user's items in time order and predicts the next one at every
position. It is both a next-item network (docs/DESIGN.md, "Next-item network contract":
`encode`, `item_vectors`, `item_bias`, `score_all`) and a generator under the model contract
(`__call__` teacher forcing, `init_decode_state` / `decode_step` with a KV cache), so every
decoder of decoding.py runs on it unchanged.

  x_i = item_embed[s_i] + pos_embed[p_i]      p_i = number of real items before s_i (left padding
                                              changes nothing), clipped to max_len - 1; dropout
  num_layers times (GPT-2, pre-LN):
      x = x + dropout(W_o MultiHeadAttention(LN(x)))   causal; keys at padding (id 0) masked
      x = x + dropout(W_2 gelu(W_1 LN(x)))             inner width mlp_dim (GPT-2: 4 d)
  h = LN(x)                                   [B, L, D]; h[:, i] depends on s[:, :i+1] only
  logits = h @ item_embed[:N + 1].T           tied output (GPT-2's LM head), no bias

Initialisation as GPT-2: every kernel and both tables ~ N(0, 0.02), the residual output
projections ~ N(0, 0.02 / sqrt(2 num_layers)), biases 0.

Generation with a cache. The first decoder input (BOS, t = 0) stands for "the end of the
history": `init_decode_state(history [B, L], K)` runs the first L - 1 history items once and
keeps their keys and values once per user (`decoding.PerUser`: never tiled nor gathered for
beams / samples), next to a per-row cache of K slots per layer for the items fed while
decoding; a step attends to both in one softmax; `decode_step` at t = 0
feeds the last history item, at t >= 1 the item generated at t - 1, so step t's logits are the
next-item scores after history + y_<t. Teacher forcing (`__call__(history, dec_inputs)`) runs
`history ++ dec_inputs[:, 1:]` through `encode` and returns the last T positions: the same
numbers (tests/test_gpt.py). A generated 0 ("no item left", decoding.py) is padding: its key is
masked and it takes no position, as in `encode`.

Positions: a history of L items and K - 1 fed-back items use positions up to L + K - 2; the
method (methods/gpt.py) sets max_len = L + K - 1 and trains on windows that long, so every
position generation reads has been trained.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from aos4rec_jax import decoding
from aos4rec_jax.models import layers
from aos4rec_jax.models.dropout import Dropout

Array = jax.Array
INIT_STD = 0.02               # GPT-2's initializer_range


@dataclasses.dataclass(frozen=True)
class GPTConfig(layers.ItemVocabulary):
    """Hyper-parameters of `GPT` (frozen, hashable: usable as a jit static)."""
    num_items: int                 # N; items are 1..N, 0 = padding
    max_len: int = 50              # positions (history + generated items); longer: clipped
    embed_dim: int = 64            # d (seed paper: n_embd 64)
    num_layers: int = 2            # (n_layer 2)
    num_heads: int = 1             # (n_head 1)
    mlp_dim: int = 256             # feed-forward inner width (GPT-2: 4 d)
    dropout_rate: float = 0.1      # embeddings, attention weights, residual branches (GPT-2)
    dtype: Any = jnp.float32       # computation dtype (params stay float32)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


def _normal(std=INIT_STD):
    return nn.initializers.normal(stddev=std)


class GPTBlock(nn.Module):
    """Pre-LN causal block; `__call__` over a whole sequence, `step` over one cached position."""
    cfg: GPTConfig

    def setup(self):
        cfg = self.cfg
        h, dh = cfg.num_heads, cfg.head_dim
        resid = _normal(INIT_STD / math.sqrt(2 * cfg.num_layers))
        dense = lambda f, name, axis=-1, init=_normal(): nn.DenseGeneral(
            features=f, axis=axis, kernel_init=init, dtype=cfg.dtype, param_dtype=jnp.float32,
            name=name)
        ln = lambda name: nn.LayerNorm(epsilon=1e-5, dtype=cfg.dtype, param_dtype=jnp.float32,
                                       name=name)
        self.ln_1 = ln('ln_1')
        self.qkv = dense((3, h, dh), 'qkv')
        self.attn_out = dense(cfg.embed_dim, 'attn_out', axis=(-2, -1), init=resid)
        self.ln_2 = ln('ln_2')
        self.fc = dense(cfg.mlp_dim, 'fc')
        self.proj = dense(cfg.embed_dim, 'proj', init=resid)
        self.drop = Dropout(cfg.dropout_rate)

    def _qkv(self, x):
        q, k, v = jnp.moveaxis(self.qkv(self.ln_1(x)), -3, 0)      # each [B, S, H, Dh]
        return q, k, v

    def _finish(self, x, y, deterministic):
        x = x + self.drop(self.attn_out(y), deterministic=deterministic)
        z = self.proj(nn.gelu(self.fc(self.ln_2(x)), approximate=True))
        return x + self.drop(z, deterministic=deterministic)

    def __call__(self, x: Array, attn_mask: Array, deterministic: bool):
        """x [B, S, D], attn_mask [B, 1, S, S] -> (x [B, S, D], (keys, values) [B, S, H, Dh])."""
        q, k, v = self._qkv(x)
        y = layers.dot_product_attention(q, k, v, attn_mask, self.drop, deterministic)
        return self._finish(x, y, deterministic), (k, v)

    def step(self, x: Array, cache: dict, at: Array, valid: Array, prefix: dict,
             prefix_valid: Array):
        """One cached position. x [B', 1, D] (B' = B * n: n rows per user, user-major); cache
        {'k', 'v'} [B', K, H, Dh] (this row's fed positions); at [B', K] bool (the slot this
        position is written to); valid [B', K] bool (those slots it may attend to, itself
        included); prefix {'k', 'v'} [B, P, H, Dh] and prefix_valid [B, P] bool: the user's
        history keys, shared by the user's n rows. One softmax over the P + K keys."""
        q, k, v = self._qkv(x)
        sel = at[:, :, None, None]
        ck = jnp.where(sel, k.astype(cache['k'].dtype), cache['k'])
        cv = jnp.where(sel, v.astype(cache['v'].dtype), cache['v'])
        rows, _, h, dh = q.shape
        b, p = prefix['k'].shape[:2]
        n = rows // b
        dtype = q.dtype
        q = q * jnp.asarray(1.0 / math.sqrt(dh), dtype)
        own = jnp.einsum('bqhd,bkhd->bhqk', q, ck, preferred_element_type=jnp.float32)
        shared = jnp.einsum('bnhd,bphd->bnhp', q.reshape(b, n, h, dh), prefix['k'],
                            preferred_element_type=jnp.float32).reshape(rows, h, 1, p)
        mask = jnp.concatenate([jnp.repeat(prefix_valid, n, axis=0), valid], axis=1)
        weights = layers.masked_softmax(jnp.concatenate([shared, own], axis=-1),
                                        mask[:, None, None, :]).astype(dtype)
        y = jnp.einsum('bnhp,bphd->bnhd', weights[..., :p].reshape(b, n, h, p), prefix['v'])
        y = y.reshape(rows, 1, h, dh) + jnp.einsum('bhqk,bkhd->bqhd', weights[..., p:], cv)
        return self._finish(x, y, True), {'k': ck, 'v': cv}


class GPT(layers.TiedItemScores, nn.Module):
    """GPT-style next-item network and generator; see the module docstring."""
    cfg: GPTConfig
    per_position = True

    def setup(self):
        cfg = self.cfg
        self.item_embed = nn.Embed(layers.num_embedding_rows(cfg.num_items), cfg.embed_dim,
                                   embedding_init=_normal(), dtype=cfg.dtype,
                                   param_dtype=jnp.float32, name='item_embed')
        self.pos_embed = nn.Embed(cfg.max_len, cfg.embed_dim, embedding_init=_normal(),
                                  dtype=cfg.dtype, param_dtype=jnp.float32, name='pos_embed')
        self.blocks = [GPTBlock(cfg, name=f'block_{i}') for i in range(cfg.num_layers)]
        self.ln_f = nn.LayerNorm(epsilon=1e-5, dtype=cfg.dtype, param_dtype=jnp.float32,
                                 name='ln_f')
        self.drop = Dropout(cfg.dropout_rate)

    # -- next-item network contract ----------------------------------------------------------
    def _run(self, seq: Array, train: bool):
        """seq [B, S] left-padded -> (h [B, S, D] before ln_f, [(k, v)] per layer)."""
        cfg = self.cfg
        mask = seq > 0
        pos = layers.history_positions(mask, cfg.max_len)
        x = self.item_vectors(seq) + self.pos_embed(pos)
        x = self.drop(x, deterministic=not train)
        s = seq.shape[1]
        causal = jnp.tril(jnp.ones((s, s), jnp.bool_))
        attn_mask = causal[None, None] & mask[:, None, None, :]
        kvs = []
        for block in self.blocks:
            x, kv = block(x, attn_mask, not train)
            kvs.append(kv)
        return x, kvs

    def encode(self, seq: Array, users: Array = None, train: bool = False) -> Array:
        """seq [B, L] left-padded (users unused) -> h [B, L, D]; h[:, i] sees seq[:, :i+1]."""
        del users
        return self.ln_f(self._run(seq, train)[0])

    # -- model contract ------------------------------------------------------------------------
    def __call__(self, history: Array, dec_inputs: Array, train: bool = False) -> Array:
        """Teacher forcing: history [B, L], dec_inputs [B, T] (BOS, y_1 .. y_{T-1}) -> float32
        logits [B, T, N + 1]; position t = the next-item scores after history ++ y_1..y_t."""
        seq = jnp.concatenate([history, dec_inputs[:, 1:].astype(history.dtype)], axis=1)
        h = self.encode(seq, None, train)
        return self.score_all(h[:, history.shape[1] - 1:])

    def init_decode_state(self, history: Array, max_len: int) -> dict:
        """Runs history[:, :-1] once. Returns {'user': decoding.PerUser({'prefix': per layer
        {'k', 'v'} [B, L - 1, H, Dh], 'prefix_real' [B, L - 1] bool (slots holding a real item),
        'last' [B] int32 (the last history item, fed at t = 0)}), 'layers': per layer {'k', 'v'}
        [B, max_len, H, Dh] (the fed positions, zeros), 'real' [B, max_len] bool, 'count' [B]
        int32 (real items so far), 'length' [B] int32 (fed slots filled)}. The decoders tile and
        gather all but 'user'. `max_len` (Python int) = decode steps the cache can hold."""
        b, l = history.shape
        prefix = history[:, :l - 1]
        _, kvs = self._run(prefix, train=False)
        real = prefix > 0
        cfg = self.cfg
        shape = (b, int(max_len), cfg.num_heads, cfg.head_dim)
        cache = tuple({'k': jnp.zeros(shape, k.dtype), 'v': jnp.zeros(shape, v.dtype)}
                      for k, v in kvs)
        user = {'prefix': tuple({'k': k, 'v': v} for k, v in kvs), 'prefix_real': real,
                'last': history[:, l - 1].astype(jnp.int32)}
        return {'user': decoding.PerUser(user),
                'layers': cache,
                'real': jnp.zeros((b, int(max_len)), jnp.bool_),
                'count': jnp.sum(real, axis=1, dtype=jnp.int32),
                'length': jnp.zeros((b,), jnp.int32)}

    def decode_step(self, state: dict, prev_items: Array, t: Array):
        """prev_items [B'] (BOS at t = 0, ignored), t int32 scalar -> (logits [B', N + 1] f32,
        state); equals position t of `__call__`. B' = B * n rows (n beams / samples per user,
        user-major) against the B users' 'user' part of the state."""
        cfg = self.cfg
        t = jnp.asarray(t, jnp.int32)
        user = state['user'].value
        n = prev_items.shape[0] // user['last'].shape[0]
        tok = jnp.where(t == 0, jnp.repeat(user['last'], n), prev_items).astype(jnp.int32)
        real = tok > 0
        count = state['count'] + real.astype(jnp.int32)
        pos = jnp.clip(count - 1, 0, cfg.max_len - 1)
        x = (self.item_vectors(tok) + self.pos_embed(pos))[:, None]
        slots = jnp.arange(state['real'].shape[1])[None, :]
        at = slots == state['length'][:, None]
        valid = jnp.where(at, real[:, None], state['real'])
        new_layers = []
        for block, cache, prefix in zip(self.blocks, state['layers'], user['prefix']):
            x, cache = block.step(x, cache, at, valid, prefix, user['prefix_real'])
            new_layers.append(cache)
        logits = self.step_scores(self.ln_f(x))[:, 0]
        return logits, {'user': state['user'], 'layers': tuple(new_layers), 'real': valid,
                        'count': count, 'length': state['length'] + 1}
