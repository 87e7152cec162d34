"""Attentive GRU encoder-decoder recommender (AOS4Rec-R, paper Sec. 3.3).

Encoder: bidirectional GRU over the item embeddings of the (left-padded) history. Both
directions run in ONE `lax.scan` (direction axis in the fused weights); at padded steps the
state is kept, so the forward GRU starts at the first real item and the backward GRU ends
there: outputs are invariant to extra left padding. Encoder outputs = [h_fwd; h_bwd] (2H).
Decoder: unidirectional GRU whose input at step t is the embedding of the previous item
(no input feeding, so all its input projections are one matmul and the recurrence a
`lax.scan`), initial state tanh(W [h_fwd_final; h_bwd_final] + b).
Attention: Luong "general" (score = h_t^T W_a e_s), global over the encoder states with padding
masked, computed for all T decoder states at once after the scan. Output:
tanh(W_c [h_t; c_t] + b) -> embed_dim -> tied (`item_embed` rows [:N + 1]) or `output_proj`.
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
class GRUConfig(layers.ItemVocabulary):
    """Hyper-parameters of `GRURec` (frozen, hashable: usable as a jit static)."""
    num_items: int                 # N; items are 1..N, BOS = N + 1
    embed_dim: int = 128           # item embedding size (paper: 128)
    hidden_dim: int = 128          # GRU state size (each encoder direction and the decoder)
    dropout_rate: float = 0.1      # on input embeddings and on the attentional output
    tie_output: bool = True        # logits = out @ item_embed[:N + 1].T
    dtype: Any = jnp.float32       # computation dtype (params stay float32)


class GRURec(layers.ItemTable, nn.Module):
    """Seq2seq attentive GRU recommender; see the module docstring and docs/DESIGN.md."""
    cfg: GRUConfig

    def setup(self):
        cfg = self.cfg
        dense = lambda f, name: nn.Dense(f, dtype=cfg.dtype, param_dtype=jnp.float32, name=name)
        self.item_embed = layers.item_embedding(cfg.num_items, cfg.embed_dim, cfg.dtype)
        self.encoder = layers.FusedGRU(cfg.hidden_dim, num_directions=2, dtype=cfg.dtype,
                                       name='encoder')
        self.bridge = dense(cfg.hidden_dim, 'bridge')                 # [h_f; h_b] -> decoder h0
        self.decoder = layers.FusedGRU(cfg.hidden_dim, num_directions=1, dtype=cfg.dtype,
                                       name='decoder')
        self.attn_key = nn.Dense(cfg.hidden_dim, use_bias=False, dtype=cfg.dtype,
                                 param_dtype=jnp.float32, name='attn_key')   # W_a (Luong general)
        self.combine = dense(cfg.embed_dim, 'combine')               # W_c [h; c]
        self.drop = Dropout(cfg.dropout_rate)
        if not cfg.tie_output:
            self.output_proj = layers.OutputProjection(cfg.vocab_size, cfg.num_embeddings, cfg.dtype,
                                                       name='output_proj')

    # -- pieces ---------------------------------------------------------------------------------
    def encode(self, history: Array, train: bool = False):
        """history [B, L] -> (values [B, L, 2H], attention keys [B, L, H], mask [B, L], h0 [B, H])."""
        cfg = self.cfg
        mask = layers.history_mask(history)
        x = self.drop(self._embed_items(history), deterministic=not train)
        xp = self.encoder.project_inputs(x)                            # [B, L, 2, 3H]
        # Direction 0 reads left -> right, direction 1 right -> left (time-reversed inputs).
        xp = jnp.stack([xp[:, :, 0], xp[:, ::-1, 1]], axis=2)
        m = jnp.stack([mask, mask[:, ::-1]], axis=2)                   # [B, L, 2]
        h0 = jnp.zeros((history.shape[0], 2, cfg.hidden_dim), cfg.dtype)
        ys, h_final = self.encoder.scan(xp, h0, m)                     # [B, L, 2, H], [B, 2, H]
        values = jnp.concatenate([ys[:, :, 0], ys[:, ::-1, 1]], axis=-1)
        keys = self.attn_key(values)
        dec_h0 = jnp.tanh(self.bridge(h_final.reshape(h_final.shape[0], -1)))
        return values, keys, mask, dec_h0

    def attend(self, h: Array, keys: Array, values: Array, mask: Array, train: bool) -> Array:
        """h [B, T, H] decoder states -> attentional outputs [B, T, E] (before the logits)."""
        scores = jnp.einsum('bth,blh->btl', h, keys, preferred_element_type=jnp.float32)
        weights = layers.masked_softmax(scores, mask[:, None, :])
        context = jnp.einsum('btl,bld->btd', weights.astype(values.dtype), values)
        out = jnp.tanh(self.combine(jnp.concatenate([h, context], axis=-1)))
        return self.drop(out, deterministic=not train)

    def embed_items(self, ids: Array) -> Array:
        """Item ids -> their rows of the item table (the decoder's input embeddings)."""
        return self._embed_items(ids)

    def decoder_states(self, history: Array, dec_embeds: Array, train: bool = False,
                       encoded: Optional[tuple] = None):
        """Teacher-forced decoder: dec_embeds [B, T, E] -> (states [B, T, H], encoder keys,
        values, mask) for `attend`; state t has read inputs 0..t. encoded: `encode(history,
        train)`'s output when the caller has it (the critic), else computed here."""
        values, keys, mask, h0 = self.encode(history, train) if encoded is None else encoded
        x = self.drop(dec_embeds, deterministic=not train)
        xp = self.decoder.project_inputs(x)                            # [B, T, 1, 3H]
        hs, _ = self.decoder.scan(xp, h0[:, None, :])                  # [B, T, 1, H]
        return hs[:, :, 0], keys, values, mask

    def decoder_next_states(self, states: Array, next_embeds: Array) -> Array:
        """One more decoder step from each of `states` [B, T, H] for each of the inputs
        `next_embeds` [B, T, c, E] -> [B, T, c, H] (no dropout: used by the critic)."""
        b, t, c, _ = next_embeds.shape
        xp = self.decoder.project_inputs(next_embeds).reshape(b * t * c, 1, -1)
        h = jnp.broadcast_to(states[:, :, None], (b, t, c, states.shape[-1]))
        h = self.decoder.step(xp, h.reshape(b * t * c, 1, -1))
        return h.reshape(b, t, c, -1)

    # -- model contract ---------------------------------------------------------------------------
    def __call__(self, history: Array, dec_inputs: Array, train: bool = False) -> Array:
        """Teacher forcing: history [B, L], dec_inputs [B, T] -> float32 logits [B, T, N + 1]."""
        return self._logits(self.decoder_hidden(history, dec_inputs, train))

    def decoder_hidden(self, history: Array, dec_inputs: Array, train: bool = False) -> Array:
        """Teacher forcing up to the output layer: [B, T, H], whose product with the output table
        (seq2seq.output_table) gives the logits (the chunked loss, config.loss_chunk)."""
        hs, keys, values, mask = self.decoder_states(history, self._embed_items(dec_inputs), train)
        return self.attend(hs, keys, values, mask, train)

    def init_decode_state(self, history: Array, max_len: int) -> dict:
        """Encodes the history once. Returns {'user': decoding.PerUser({'values' [B, L, 2H],
        'keys' [B, L, H], 'enc_mask' [B, L] bool}), 'h' [B, H]}: the decoders tile and gather
        'h' only. `max_len` is accepted for the contract (unused)."""
        del max_len
        values, keys, mask, h0 = self.encode(history, train=False)
        return {'user': decoding.PerUser({'values': values, 'keys': keys, 'enc_mask': mask}),
                'h': h0}

    def decode_step(self, state: dict, prev_items: Array, t: Array):
        """prev_items [B'] (BOS at t = 0), t (unused) -> (logits [B', N + 1] f32, new state).
        B' = B * n rows (n beams / samples per user, user-major); the n decoder states of a
        user attend to that user's encoder states as n query positions of one call."""
        del t
        user = state['user'].value
        x = self._embed_items(prev_items)
        xp = self.decoder.project_inputs(x)                            # [B', 1, 3H]
        h = self.decoder.step(xp, state['h'][:, None, :])[:, 0]        # [B', H]
        b = user['keys'].shape[0]
        logits = self._step_logits(self.attend(h.reshape(b, -1, h.shape[-1]), user['keys'],
                                               user['values'], user['enc_mask'], train=False))
        return logits.reshape(h.shape[0], -1), {'user': state['user'], 'h': h}
