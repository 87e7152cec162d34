"""GC-SAN: Graph Contextualized Self-Attention Network for Session-based Recommendation
(Xu et al., IJCAI 2019), on SR-GNN's session graph and gated GNN (Wu et al., AAAI 2019).

Next-item network (docs/DESIGN.md, "Next-item network contract"); represents the end of the
sequence only: h [B, D].

1. Session graph (`session_graph`, static shapes, no Python loop over the batch): the nodes of
   a sequence are its distinct items in increasing id order (as SR-GNN's np.unique), padded
   with 0 to L slots; `alias[b, i]` is the node of seq[b, i]. Each consecutive pair of real
   items u -> v is an edge; with C[u, v] = its count,
       a_out[u, v] = C[u, v] / sum_w C[u, w]     (outgoing edges of u, normalised by u's out-degree)
       a_in[v, u]  = C[u, v] / sum_w C[w, v]     (incoming edges of v, normalised by v's in-degree)
   (row = the node being updated; a row without edges is 0). These are SR-GNN's A_in / A_out as
   its GNN cell reads them (`A[:, :, :n]`, `A[:, :, n:]`). SR-GNN's paper weights an edge by
   its occurrences divided by the out-degree (as here); its code puts 1 per distinct edge.
2. Gated GNN, `num_steps` (1) steps of SR-GNN's cell on the node vectors H (item embeddings):
       a = [a_in (H W_in + b_in) + b_iah;  a_out (H W_out + b_out) + b_oah]       [n, 2d]
       r = s(W_r a + U_r H), z = s(W_z a + U_z H), c = tanh(W_c a + r * (U_c H))
       H = (1 - z) * c + z * H                    (SR-GNN: hy = c + z * (H - c))
3. Position i gets the vector of its node: X[i] = H[alias[i]].
4. `num_blocks` (k = 1) self-attention blocks (single head; keys at padding masked, no causal
   mask — the last position, the only one used, sees the whole sequence either way):
       E = softmax((X W_Q)(X W_K)^T / sqrt(d)) (X W_V);   dropout
       F = ReLU(E W_1 + b_1) W_2 + b_2 + E;               dropout       (W_1, W_2: d x d)
5. h = omega * F[last position] + (1 - omega) * X[last position]  (global preference and current
   interest), omega = 0.6.  score(i) = h . item_embed[i]  (tied table, no bias).

Padding never reaches h: padded node slots have no edges and are no position's node, padded
keys are masked. Init: uniform(-1/sqrt(d), 1/sqrt(d)) for the GNN and the item table (SR-GNN).

Paper defaults: k = 1 block (tuned 1..6), omega = 0.6 (tuned 0..1), one GNN step, d = 100
(SR-GNN's size; an assumption), dropout 0.2; Adam lr 1e-3, L2 1e-5 (the method's concern).
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
class GCSANConfig(layers.ItemVocabulary):
    """Hyper-parameters of `GCSAN` (frozen, hashable: usable as a jit static)."""
    num_items: int                 # N; items are 1..N, 0 = padding
    max_len: int = 50              # L: history window the method feeds (any length works)
    embed_dim: int = 100           # d
    num_steps: int = 1             # gated GNN steps
    num_blocks: int = 1            # k self-attention blocks
    omega: float = 0.6             # weight of the self-attention output in h
    dropout_rate: float = 0.2
    dtype: Any = jnp.float32       # computation dtype (params stay float32)


def symmetric_uniform(scale: float):
    """Initializer U(-scale, scale) (SR-GNN: every parameter U(-1/sqrt(d), 1/sqrt(d)))."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


def session_graph(seq: Array):
    """The session graph of each left-padded row of seq [B, L] int32.

    Returns (nodes [B, L] int32: the distinct items in increasing order, then 0;
             alias [B, L] int32: node index of each position (0 at padding positions);
             a_in [B, L, L] float32: a_in[b, v, u] = C[u, v] / in-degree(v);
             a_out [B, L, L] float32: a_out[b, u, v] = C[u, v] / out-degree(u)),
    C[u, v] = the number of consecutive real pairs (node u, node v). O(L^2) per row, jit-able.
    """
    seq = jnp.asarray(seq, jnp.int32)
    length = seq.shape[-1]
    mask = seq > 0
    same = seq[:, :, None] == seq[:, None, :]                            # [B, i, j]
    earlier = jnp.tril(jnp.ones((length, length), jnp.bool_), -1)       # j < i
    first = mask & ~jnp.any(same & earlier[None], axis=-1)              # first occurrences
    smaller = (seq[:, None, :] < seq[:, :, None]) & first[:, None, :]   # [B, i, j]: item j < item i
    rank = jnp.sum(smaller, axis=-1).astype(jnp.int32)                  # node index of position i
    alias = jnp.where(mask, rank, 0)
    slot = jax.nn.one_hot(jnp.where(first, rank, length), length, dtype=jnp.int32)  # [B, i, n]
    nodes = jnp.sum(jnp.where(first, seq, 0)[:, :, None] * slot, axis=1)
    valid = (mask[:, :-1] & mask[:, 1:]).astype(jnp.float32)             # [B, L-1]
    src = jax.nn.one_hot(alias[:, :-1], length, dtype=jnp.float32) * valid[..., None]
    dst = jax.nn.one_hot(alias[:, 1:], length, dtype=jnp.float32)
    counts = jnp.einsum('bpu,bpv->buv', src, dst)                        # C [B, u, v]
    out_deg = jnp.sum(counts, axis=-1, keepdims=True)                    # [B, u, 1]
    in_deg = jnp.swapaxes(jnp.sum(counts, axis=-2, keepdims=True), -1, -2)   # [B, v, 1]
    a_out = counts / jnp.maximum(out_deg, 1.0)
    a_in = jnp.swapaxes(counts, -1, -2) / jnp.maximum(in_deg, 1.0)
    return nodes, alias, a_in, a_out


@dataclasses.dataclass(frozen=True)
class PackedNodes:
    """The session graphs' nodes of a batch packed end to end: row b's n_b nodes (the
    distinct items of `session_graph`, in its order) take the slots base[b] .. base[b] + n_b - 1
    of its device group's `cap` (group g = b // (B / G) owns the slots g x cap .. (g + 1) x cap -
    1; rows in order within it). The caller makes sure no group has more than cap nodes."""
    items: Array        # [G x cap] int32: the item of each slot (0 at the group's unused tail)
    base: Array         # [B] int32: the slot of each row's node 0
    slot: Array         # [B, L] int32: the slot of node j of row b; G x cap (off the end) for j >= n_b

    @classmethod
    def of(cls, nodes: Array, groups: int, cap: int) -> 'PackedNodes':
        """From `session_graph`'s nodes [B, L] (a row's n_b nodes first, then 0)."""
        B, L = nodes.shape
        valid = nodes > 0
        count = jnp.sum(valid, axis=1, dtype=jnp.int32).reshape(groups, B // groups)
        start = jnp.cumsum(count, axis=1) - count                         # exclusive, per group
        base = (jnp.arange(groups, dtype=jnp.int32)[:, None] * cap + start).reshape(B)
        slot = jnp.where(valid, base[:, None] + jnp.arange(L, dtype=jnp.int32)[None, :],
                         groups * cap)
        items = jnp.zeros((groups * cap,), jnp.int32).at[slot].set(nodes, mode='drop')
        return cls(items, base, slot)

    def spread(self, packed: Array) -> Array:
        """[G x cap, ...] -> [B, L, ...]: row b's node slots from the packed ones (0 beyond n_b)."""
        valid = self.slot < self.items.shape[0]
        keep = valid.reshape(valid.shape + (1,) * (packed.ndim - 1))
        return jnp.where(keep, packed[jnp.where(valid, self.slot, 0)], jnp.zeros((), packed.dtype))

    def gather(self, rows: Array) -> Array:
        """[B, L, ...] -> [G x cap, ...]: the inverse of `spread` on the real node slots (0 on
        the unused ones)."""
        out = jnp.zeros(self.items.shape + rows.shape[2:], rows.dtype)
        return out.at[self.slot].set(rows, mode='drop')


class GatedGNNCell(nn.Module):
    """One step of SR-GNN's gated graph cell on node vectors h [B, n, d]."""
    embed_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, a_in: Array, a_out: Array, h: Array, graph=None) -> Array:
        """h [B, n, d] -> [B, n, d]. With graph = `PackedNodes`, h is the packed node vectors
        [P, d] (every row's nodes end to end): the per-node layers run on them and only the two
        edge products go through the rows' [B, n, d] layout."""
        d = self.embed_dim
        init = symmetric_uniform(1.0 / math.sqrt(d))
        dense = lambda f, name: nn.Dense(f, dtype=self.dtype, param_dtype=jnp.float32,
                                         kernel_init=init, bias_init=init, name=name)
        b_iah = self.param('b_iah', init, (d,), jnp.float32).astype(self.dtype)
        b_oah = self.param('b_oah', init, (d,), jnp.float32).astype(self.dtype)
        a_in, a_out = a_in.astype(self.dtype), a_out.astype(self.dtype)
        spread, gather = ((lambda x: x), (lambda x: x)) if graph is None else (graph.spread,
                                                                               graph.gather)
        msg_in = gather(jnp.einsum('bvu,bud->bvd', a_in, spread(dense(d, 'edge_in')(h)))) + b_iah
        msg_out = gather(jnp.einsum('buv,bvd->bud', a_out, spread(dense(d, 'edge_out')(h)))) + b_oah
        gi = dense(3 * d, 'input_gates')(jnp.concatenate([msg_in, msg_out], axis=-1))
        gh = dense(3 * d, 'hidden_gates')(h)
        i_r, i_z, i_c = jnp.split(gi, 3, axis=-1)
        h_r, h_z, h_c = jnp.split(gh, 3, axis=-1)
        r = jax.nn.sigmoid(i_r + h_r)
        z = jax.nn.sigmoid(i_z + h_z)
        c = jnp.tanh(i_c + r * h_c)
        return ((1.0 - z) * c + z * h).astype(self.dtype)


class SelfAttentionBlock(nn.Module):
    """GC-SAN's self-attention layer + point-wise feed-forward with residual (single head)."""
    cfg: GCSANConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array, deterministic: bool, keys: Array = None,
                 spread=None) -> Array:
        """x [B, Q, d] (the queries' inputs), mask [B, L] bool (True = real key). The keys and
        values are x's (Q = L) unless `keys` gives their inputs in another layout, which
        `spread` takes from the projections' layout to [B, L, 1, d] (the packed network: keys =
        the packed node vectors, x = the last position's)."""
        cfg = self.cfg
        d = cfg.embed_dim
        proj = lambda name: nn.DenseGeneral((1, d), use_bias=False, dtype=cfg.dtype,
                                            param_dtype=jnp.float32, name=name)
        dense = lambda name: nn.Dense(d, dtype=cfg.dtype, param_dtype=jnp.float32, name=name)
        drop = Dropout(cfg.dropout_rate)
        src = x if keys is None else keys
        q, k, v = proj('query')(x), proj('key')(src), proj('value')(src)  # [B, L, 1, d]
        if spread is not None:
            k, v = spread(k), spread(v)
        e = layers.dot_product_attention(q, k, v, mask[:, None, None, :])[:, :, 0]
        e = drop(e, deterministic=deterministic)
        f = dense('ffn_2')(nn.relu(dense('ffn_1')(e))) + e
        return drop(f, deterministic=deterministic)


class GCSAN(layers.TiedItemScores, nn.Module):
    """GC-SAN next-item network; see the module docstring and docs/DESIGN.md."""
    cfg: GCSANConfig
    per_position = False

    def setup(self):
        cfg = self.cfg
        init = symmetric_uniform(1.0 / math.sqrt(cfg.embed_dim))
        self.item_embed = nn.Embed(layers.num_embedding_rows(cfg.num_items), cfg.embed_dim,
                                   dtype=cfg.dtype, param_dtype=jnp.float32, embedding_init=init,
                                   name='item_embed')
        self.gnn = GatedGNNCell(cfg.embed_dim, cfg.dtype, name='gnn')
        self.blocks = [SelfAttentionBlock(cfg, name=f'block_{i}') for i in range(cfg.num_blocks)]

    def encode(self, seq: Array, users: Array = None, train: bool = False) -> Array:
        """seq [B, L] left-padded (users unused) -> h [B, D]."""
        del users
        cfg = self.cfg
        mask = seq > 0
        nodes, alias, a_in, a_out = session_graph(seq)
        h = layers.lookup(self.item_embed.embedding, nodes, cfg.dtype)  # [B, n, d]
        for _ in range(cfg.num_steps):                                   # shared weights
            h = self.gnn(a_in, a_out, h)
        x = jnp.take_along_axis(h, alias[..., None], axis=1)             # [B, L, d]
        f = x
        for block in self.blocks:
            f = block(f, mask, not train)
        omega = jnp.asarray(cfg.omega, cfg.dtype)
        return omega * f[:, -1] + (1.0 - omega) * x[:, -1]

    def encode_packed(self, seq: Array, groups: int, cap: int, train: bool = True) -> Array:
        """`encode` (h [B, D]) with the per-node and per-position layers on the batch's real
        nodes only (docs/DESIGN.md, "Packed sequences"; num_blocks = 1). The distinct items of
        each device group's rows lie end to end in `cap` slots (`PackedNodes`; the caller made
        sure no group has more); the gated GNN's dense layers, the key and value projections run
        on those G x cap slots, the two edge products and the attention's keys on the rows'
        [B, L] layout, and the query, the feed-forward layer and h on the last position only (the
        only one h reads). Same h as `encode`, with dropout's masks drawn on [B, 1, d]."""
        cfg = self.cfg
        if cfg.num_blocks != 1:
            raise ValueError(f'GCSAN.encode_packed: num_blocks must be 1, got {cfg.num_blocks}')
        mask = seq > 0
        nodes, alias, a_in, a_out = session_graph(seq)
        graph = PackedNodes.of(nodes, groups, cap)
        h = layers.lookup(self.item_embed.embedding, graph.items, cfg.dtype)  # [G x cap, d]
        for _ in range(cfg.num_steps):
            h = self.gnn(a_in, a_out, h, graph)
        last = graph.base + alias[:, -1]             # the packed slot of each row's last item
        x_last = h[last][:, None]                                        # [B, 1, d]
        spread = lambda t: jnp.take_along_axis(graph.spread(t), alias[:, :, None, None], axis=1)
        f = self.blocks[0](x_last, mask, not train, keys=h, spread=spread)
        omega = jnp.asarray(cfg.omega, cfg.dtype)
        return omega * f[:, 0] + (1.0 - omega) * x_last[:, 0]

    def __call__(self, seq: Array, users: Array = None, train: bool = False) -> Array:
        """= encode; every parameter exists after `init`."""
        return self.encode(seq, users, train)
