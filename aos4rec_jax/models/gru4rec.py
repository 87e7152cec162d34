"""GRU4Rec+ (Hidasi & Karatzoglou, CIKM 2018, "Recurrent Neural Networks with Top-k Gains for
Session-based Recommendations"; GRU4Rec: Hidasi et al., ICLR 2016).

Next-item network (docs/DESIGN.md, "Next-item network contract"); per position, causal.

  x = item_embed[seq];  dropout (embedding dropout, GRU4Rec's dropout_p_embed)
  h_t = GRU(x_t, h_{t-1}), one layer, hidden size = embed_dim, h_0 = 0
  h = dropout(h) (GRU4Rec's dropout_p_hidden)             [B, L, D]

Left padding: at a padded step the GRU state is kept (the update is masked), so the state
stays h_0 = 0 until the first real item and the states at real positions are exactly those of
the unpadded sequence ([0, 0, a, b, c] gives the h of [a, b, c]). h at padding positions is 0.
h[:, i] depends on seq[:, :i+1] only.

Output: GRU4Rec's output layer, a separate item matrix and bias, not tied to the input table:
score(i) = h . output_item_embed[i] + output_item_bias[i]. (GRU4Rec's own "constrained
embedding" option ties them; this class does not.) The gates use layers.FusedGRU (the
PyTorch / flax GRUCell formulation, orthogonal recurrent init).

Defaults: embed_dim = hidden = 64 (GRU4Rec+ used one layer of 100 units on its session data;
64 here as the other baselines), dropout_p_hidden 0.25 / dropout_p_embed 0.0 (the ranges of
the authors' tuned settings, 0.0-0.5). The loss (BPR-max / TOP1-max / cross-entropy over
sampled negatives) is the method's concern.
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
class GRU4RecConfig(layers.ItemVocabulary):
    """Hyper-parameters of `GRU4Rec` (frozen, hashable: usable as a jit static)."""
    num_items: int                 # N; items are 1..N, 0 = padding
    max_len: int = 50              # L: history window the method feeds (any length works)
    embed_dim: int = 64            # item embedding size = GRU hidden size
    dropout_rate: float = 0.25     # on the GRU outputs (GRU4Rec's dropout_p_hidden)
    embed_dropout_rate: float = 0.0  # on the input embeddings (dropout_p_embed)
    dtype: Any = jnp.float32       # computation dtype (params stay float32)


class GRU4Rec(layers.BiasedItemScores, nn.Module):
    """GRU4Rec+ next-item network; see the module docstring and docs/DESIGN.md."""
    cfg: GRU4RecConfig
    per_position = True
    OUTPUT_TABLE = 'output_item_embed'      # layers.BiasedItemScores: not the input table

    def setup(self):
        cfg = self.cfg
        rows = layers.num_embedding_rows(cfg.num_items)
        self.item_embed = layers.item_embedding(cfg.num_items, cfg.embed_dim, cfg.dtype)
        self.gru = layers.FusedGRU(cfg.embed_dim, num_directions=1, dtype=cfg.dtype, name='gru')
        self.output_item_embed = nn.Embed(rows, cfg.embed_dim, dtype=cfg.dtype,
                                          param_dtype=jnp.float32, name='output_item_embed')
        self.output_item_bias = self.param('output_item_bias', nn.initializers.zeros_init(),
                                           (rows,), jnp.float32)
        self.drop = Dropout(cfg.dropout_rate)
        self.embed_drop = Dropout(cfg.embed_dropout_rate)

    def encode(self, seq: Array, users: Array = None, train: bool = False) -> Array:
        """seq [B, L] left-padded (users unused) -> h [B, L, D]."""
        del users
        cfg = self.cfg
        mask = seq > 0
        x = layers.lookup(self.item_embed.embedding, seq, cfg.dtype)
        x = self.embed_drop(x, deterministic=not train)
        xp = self.gru.project_inputs(x)                                # [B, L, 1, 3H]
        h0 = jnp.zeros((seq.shape[0], 1, cfg.embed_dim), cfg.dtype)
        hs, _ = self.gru.scan(xp, h0, mask[..., None])                 # [B, L, 1, H]
        return self.drop(hs[:, :, 0], deterministic=not train)

    def __call__(self, seq: Array, users: Array = None, train: bool = False) -> Array:
        """= encode; also touches the output layer so that `init` creates it."""
        h = self.encode(seq, users, train)
        zero = jnp.zeros((), jnp.int32)
        self.item_vectors(zero), self.item_bias(zero)
        return h
