"""Pieces shared by the seq2seq recommenders (Flax linen).

Conventions (docs/DESIGN.md, "Item ids"): 0 = padding, items 1..N, BOS = N + 1. Models output
logits over V = N + 1 entries. The item table is an `nn.Embed` named `item_embed` with
`round_up(N + 2, 128)` rows, so it can be sharded along the item axis on up to 128 devices;
the untied output layer (`output_proj`) is padded the same way. Logits use the first N + 1
rows / columns only.

Parameters are float32; `dtype` is the computation dtype. Attention softmax and output logits
are computed in float32.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import flax.linen as nn

Array = jax.Array
Dtype = Any

ROW_MULTIPLE = 128          # item-table rows are padded to a multiple of this
NEG_INF = -1e30             # finite "minus infinity" for masked attention logits (float32)


def round_up(x: int, multiple: int = ROW_MULTIPLE) -> int:
    """Smallest multiple of `multiple` that is >= x."""
    return -(-int(x) // multiple) * multiple


def num_embedding_rows(num_items: int) -> int:
    """Rows of the `item_embed` table: padding + N items + BOS, rounded up to 128."""
    return round_up(num_items + 2, ROW_MULTIPLE)


def canonical_dtype(dtype: Any):
    """'bfloat16' / jnp.bfloat16 / np.dtype -> a hashable jnp dtype object."""
    return jnp.dtype(dtype)


def history_mask(history: Array) -> Array:
    """[B, L] bool: True for real items (id > 0)."""
    return history > 0


def history_positions(mask: Array, max_len: int) -> Array:
    """Positions counted from the first real item: cumsum(mask) - 1, clipped to [0, max_len).

    With left padding the first real item gets position 0 whatever the amount of padding, so
    extra leading zeros change no output. Padded slots get position 0 (they are masked anyway).
    """
    pos = jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1
    return jnp.clip(pos, 0, max_len - 1)


def masked_softmax(logits: Array, mask: Optional[Array]) -> Array:
    """Softmax over the last axis in float32, masked entries get exactly 0.

    A row whose entries are all masked gives all-zero weights (so the attention output is 0,
    finite, and independent of how many padded keys there are).
    """
    logits = logits.astype(jnp.float32)
    if mask is None:
        return jax.nn.softmax(logits, axis=-1)
    logits = jnp.where(mask, logits, NEG_INF)
    weights = jax.nn.softmax(logits, axis=-1)
    return jnp.where(mask, weights, 0.0)


def dot_product_attention(q: Array, k: Array, v: Array, mask: Optional[Array],
                          dropout: Optional[nn.Module] = None,
                          deterministic: bool = True) -> Array:
    """Multi-head scaled dot-product attention.

    q [B, Q, H, Dh], k / v [B, K, H, Dh], mask broadcastable to [B, H, Q, K] (True = attend).
    Returns [B, Q, H, Dh] in q's dtype. Scores and softmax in float32.
    """
    dtype = q.dtype
    q = q * jnp.asarray(1.0 / math.sqrt(q.shape[-1]), dtype)
    scores = jnp.einsum('bqhd,bkhd->bhqk', q, k, preferred_element_type=jnp.float32)
    weights = masked_softmax(scores, mask)
    if dropout is not None and not deterministic:
        weights = dropout(weights, deterministic=False)
    return jnp.einsum('bhqk,bkhd->bqhd', weights.astype(dtype), v)


# ------------------------------------------------------------------ packed streams in chunks
# (docs/DESIGN.md, "Packed sequences"): a batch's real items end to end, in chunks of W = L; a
# row's tokens are consecutive and at most W, so they lie in a chunk and its neighbours.
def band_keys(x: Array, chunks_per_group: int, fill=0, both_sides: bool = False) -> Array:
    """The keys of a banded layout: x [n, W, ...] (n = groups x chunks_per_group chunks of a
    packed stream) -> [n, 2W, ...], each chunk's rows after those of the chunk before it in its
    group ([n, 3W, ...] with `both_sides`: then those of the chunk after it); `fill` beyond a
    group's ends. Nothing crosses groups, so a data-sharded batch needs no communication."""
    g = x.reshape((-1, chunks_per_group) + x.shape[1:])
    edge = jnp.full_like(g[:, :1], fill)
    parts = [jnp.concatenate([edge, g[:, :-1]], axis=1), g]
    if both_sides:
        parts.append(jnp.concatenate([g[:, 1:], edge], axis=1))
    keys = jnp.concatenate(parts, axis=2)
    return keys.reshape((x.shape[0], len(parts) * x.shape[1]) + x.shape[2:])


def band_mask(segment: Array, column: Array, chunks_per_group: int, causal: bool = True) -> Array:
    """The attention mask of a packed stream in chunks: segment, column int [n, W] (a token's
    row of the batch and its column there; segment -1 = filler) -> bool [n, 1, W, 2W] (causal:
    a query attends to its own row's keys at its column or before) or [n, 1, W, 3W]
    (causal=False: to every key of its row; `band_keys(..., both_sides=True)`)."""
    seg_k = band_keys(segment, chunks_per_group, fill=-1, both_sides=not causal)
    same = (seg_k[:, None, :] == segment[:, :, None]) & (segment[:, :, None] >= 0)
    if causal:
        col_k = band_keys(column, chunks_per_group)
        same = same & (col_k[:, None, :] <= column[:, :, None])
    return same[:, None]


def key_major(x: Array) -> Array:
    """[B, K, H, Dh] -> [B, H, Dh, K]: the layout of the decoders' key / value caches, the one
    the attention's two products read without a transpose on XLA:CPU (profiled: a cache kept
    [B, K, H, Dh] was transposed at every decode step; docs/benchmarks.md)."""
    return jnp.transpose(x, (0, 2, 3, 1))


def key_major_attention(q: Array, k: Array, v: Array, mask: Optional[Array]) -> Array:
    """`dot_product_attention` (no dropout) with keys and values stored key-major.

    q [B, Q, H, Dh]; k / v [B, H, Dh, K] (the layout of a decode cache: the products read it
    as it is stored, no transpose per step); mask broadcastable to [B, H, Q, K]. Returns
    [B, Q, H, Dh] in q's dtype, equal to ``dot_product_attention(q, k', v', mask)`` with
    k' = k.transpose(0, 3, 1, 2)."""
    dtype = q.dtype
    q = q * jnp.asarray(1.0 / math.sqrt(q.shape[-1]), dtype)
    scores = jnp.einsum('bqhd,bhdk->bhqk', q, k, preferred_element_type=jnp.float32)
    weights = masked_softmax(scores, mask)
    return jnp.einsum('bhqk,bhdk->bqhd', weights.astype(dtype), v)


def item_embedding(num_items: int, features: int, dtype: Dtype) -> nn.Embed:
    """The item table; to be assigned to `self.item_embed` in a model's setup()."""
    return nn.Embed(num_embeddings=num_embedding_rows(num_items), features=features,
                    dtype=dtype, param_dtype=jnp.float32, name='item_embed')


def lookup(table: Array, ids: Array, dtype: Dtype) -> Array:
    """Gather rows of `table` (float32 param) and cast only the gathered rows to `dtype`."""
    return jnp.take(table, ids, axis=0, mode='clip').astype(dtype)


def tied_logits(x: Array, table: Array, vocab_size: int) -> Array:
    """x [..., D] @ table[:V].T -> float32 logits [..., V] (``scores_against``'s backward)."""
    return scores_against(x, table[:vocab_size].astype(x.dtype))


def whole_table_logits(x: Array, table: Array, vocab_size: int) -> Array:
    """`tied_logits` for a decoder's loop: x [..., D] @ table.T over the whole table, then the
    first V columns. `table[:V]` inside a loop is copied at every step (XLA:CPU does not hoist
    it; profiled in docs/benchmarks.md), while the extra columns are only the table's row
    padding (under 128), and their slice fuses into the logits' consumer."""
    return scores_against(x, table.astype(x.dtype))[..., :vocab_size]


@jax.custom_vjp
def scores_against(x: Array, w: Array) -> Array:
    """x [..., D] @ w.T for a table w [V, D] -> float32 scores [..., V].

    The same product as ``jnp.einsum('...d,vd->...v', x, w)``, with its own backward pass for
    the table's gradient: autodiff gives it as g^T @ x, and XLA's CPU backend then writes the
    whole [N, V] score gradient g transposed before the product (profiled: a fifth of an MLE
    step at 3,323 items; benchmarks/op_profile.py). Here it is (x^T @ g)^T, whose only
    transposes are of x [N, D] and of the [D, V] result. The same sums in another order
    (float32 rounding); tests/test_layers_tied_logits.py."""
    return jnp.einsum('...d,vd->...v', x, w, preferred_element_type=jnp.float32)


def _scores_fwd(x, w):
    return scores_against(x, w), (x, w)


def _scores_bwd(res, g):
    x, w = res
    dx = jnp.einsum('...v,vd->...d', g, w, preferred_element_type=jnp.float32).astype(x.dtype)
    n = x.shape[-1]
    dw_t = jnp.einsum('nd,nv->dv', x.reshape(-1, n), g.reshape(-1, g.shape[-1]),
                      preferred_element_type=jnp.float32)
    return dx, dw_t.T.astype(w.dtype)


scores_against.defvjp(_scores_fwd, _scores_bwd)


class OutputProjection(nn.Module):
    """Untied output layer `output_proj`: kernel [D, Vpad], bias [Vpad], Vpad = round_up(N + 2).

    Padded like `item_embed` so that it can be sharded along the item axis; logits use the
    first `vocab_size` columns only.
    """
    vocab_size: int
    padded_size: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, whole: bool = False) -> Array:
        """x [..., D] -> float32 logits [..., vocab_size]. whole=True (a decoder's step): the
        product with the whole padded kernel, then the first vocab_size columns, so a loop does
        not copy the kernel's slice every step (as `whole_table_logits`)."""
        kernel = self.param('kernel', nn.initializers.lecun_normal(),
                            (x.shape[-1], self.padded_size), jnp.float32)
        bias = self.param('bias', nn.initializers.zeros_init(), (self.padded_size,), jnp.float32)
        if whole:
            logits = jnp.einsum('...d,dv->...v', x.astype(self.dtype), kernel.astype(self.dtype),
                                preferred_element_type=jnp.float32)
            return (logits + bias)[..., :self.vocab_size]
        w = kernel[:, :self.vocab_size].astype(self.dtype)
        logits = jnp.einsum('...d,dv->...v', x.astype(self.dtype), w,
                            preferred_element_type=jnp.float32)
        return logits + bias[:self.vocab_size]


def orthogonal_gram_schmidt(key, n: int, dtype=jnp.float32) -> jax.Array:
    """A Haar-random orthogonal n x n matrix by Gram-Schmidt on a Gaussian matrix, in plain XLA ops.

    Same distribution as `nn.initializers.orthogonal()` (QR of a Gaussian matrix with the signs of
    diag(R) fixed), but without the LAPACK QR kernel: jaxlib's CPU QR runs its batch on the XLA
    thread pool and waits for it there, and several QRs of one init (or of 8 fake devices) on a
    2-core machine can take every pool thread and wait for each other forever (seen here: every
    'tf_XLAEigen' thread blocked in lapack_sgeqrf_ffi -> ParallelBatchMap -> BlockingCounter::Wait).
    Two passes of modified Gram-Schmidt keep the columns orthonormal to float32 precision.
    """
    a = jax.random.normal(key, (n, n), jnp.float32)
    cols = jnp.arange(n)

    def body(j, q):
        v = a[:, j]
        for _ in range(2):                                   # re-orthogonalise once
            coef = jnp.where(cols < j, q.T @ v, 0.0)           # against the columns done so far
            v = v - q @ coef
        return q.at[:, j].set(v / jnp.linalg.norm(v))

    q = jax.lax.fori_loop(0, n, body, jnp.zeros((n, n), jnp.float32))
    return q.astype(dtype)


def _stacked_orthogonal(num_gates: int):
    """Init for a fused recurrent kernel [..., H, G*H]: an orthogonal H x H block per gate."""

    def init(key, shape, dtype=jnp.float32):
        *lead, h, gh = shape
        assert gh == num_gates * h, shape
        n = math.prod(lead) * num_gates
        blocks = jax.vmap(lambda k: orthogonal_gram_schmidt(k, h, dtype))(jax.random.split(key, n))
        blocks = blocks.reshape(*lead, num_gates, h, h)
        return jnp.moveaxis(blocks, -3, -2).reshape(shape)   # [..., H, G, H] -> [..., H, G*H]

    return init


def gru_update(xp: Array, h: Array, w: Array, b: Array, mask: Optional[Array]) -> Array:
    """GRU recurrence given the input projection xp [B, D, 3H]; w [D, H, 3H], b [D, 3H]."""
    hp = jnp.einsum('bdh,dhk->bdk', h, w) + b
    xr, xz, xn = jnp.split(xp, 3, axis=-1)
    hr, hz, hn = jnp.split(hp, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    h_new = ((1.0 - z) * n + z * h).astype(h.dtype)
    if mask is not None:
        h_new = jnp.where(mask[..., None], h_new, h)
    return h_new


class FusedGRU(nn.Module):
    """GRU with fused gates and an optional leading "direction" axis (bidirectional runs).

    Parameters (D = num_directions, H = hidden_dim, E = input features):
      input/kernel [E, D, 3H], input/bias [D, 3H], recurrent_kernel [D, H, 3H],
      recurrent_bias [D, 3H]. Gate order r, z, n (as PyTorch / flax GRUCell):
        r = s(x_r + h W_r + b_r), z = s(x_z + h W_z + b_z), n = tanh(x_n + r * (h W_n + b_n)),
        h' = (1 - z) * n + z * h.
    The input projection of all time steps is one matmul (`project_inputs`); the recurrence is
    a `lax.scan` over time (`scan`) or one step (`step`).
    """
    hidden_dim: int
    num_directions: int = 1
    dtype: Dtype = jnp.float32

    def setup(self):
        d, h = self.num_directions, self.hidden_dim
        self.input_proj = nn.DenseGeneral(features=(d, 3 * h), dtype=self.dtype,
                                          param_dtype=jnp.float32, name='input')
        self.recurrent_kernel = self.param('recurrent_kernel', _stacked_orthogonal(3), (d, h, 3 * h),
                                           jnp.float32)
        self.recurrent_bias = self.param('recurrent_bias', nn.initializers.zeros_init(),
                                         (d, 3 * h), jnp.float32)

    def project_inputs(self, x: Array) -> Array:
        """x [..., E] -> [..., D, 3H] (input part of all gates, with its bias)."""
        return self.input_proj(x)

    def step(self, xp: Array, h: Array, mask: Optional[Array] = None) -> Array:
        """One step. xp [B, D, 3H], h [B, D, H], mask [B, D] or None (False = keep h)."""
        return gru_update(xp, h, self.recurrent_kernel.astype(self.dtype),
                          self.recurrent_bias.astype(self.dtype), mask)

    def scan(self, xp: Array, h0: Array, mask: Optional[Array] = None):
        """Run over time. xp [B, T, D, 3H], h0 [B, D, H], mask [B, T, D] or None.

        Returns (outputs [B, T, D, H], final state [B, D, H]). Each direction processes the
        time axis as given (reverse the inputs beforehand for a backward direction).
        """
        w = self.recurrent_kernel.astype(self.dtype)
        b = self.recurrent_bias.astype(self.dtype)

        def body(h, inp):
            x_t, m_t = inp
            h_new = gru_update(x_t, h, w, b, m_t)
            return h_new, h_new

        xs = jnp.swapaxes(xp, 0, 1)                                  # [T, B, D, 3H]
        ms = None if mask is None else jnp.swapaxes(mask, 0, 1)      # [T, B, D]
        h_final, ys = jax.lax.scan(body, h0, (xs, ms))
        return jnp.swapaxes(ys, 0, 1), h_final


class ItemTable:
    """Mixin of the seq2seq models: item lookups in `self.item_embed` and the output logits
    (tied to that table, or `self.output_proj` when `cfg.tie_output` is False)."""

    def _embed_items(self, ids):
        return lookup(self.item_embed.embedding, ids, self.cfg.dtype)

    def _logits(self, x):
        if self.cfg.tie_output:
            return tied_logits(x, self.item_embed.embedding, self.cfg.vocab_size)
        return self.output_proj(x)

    def _step_logits(self, x):
        """`_logits` of one decode step, without a per-step copy of the table's first V rows
        (`whole_table_logits`; untied: `OutputProjection(whole=True)`)."""
        if self.cfg.tie_output:
            return whole_table_logits(x, self.item_embed.embedding, self.cfg.vocab_size)
        return self.output_proj(x, whole=True)


class TiedItemScores:
    """Mixin of the next-item models whose output is their input item table `self.item_embed`
    (tied), without an output bias: the method side's `item_vectors`, `item_bias`, `score_all`."""

    def item_vectors(self, ids):
        """ids [...] -> the item table's rows [..., D] (tied input / output embeddings)."""
        return lookup(self.item_embed.embedding, ids, self.cfg.dtype)

    def item_bias(self, ids):
        """No output bias: zeros [...] float32."""
        return jnp.zeros(jnp.shape(ids), jnp.float32)

    def score_all(self, h):
        """h [..., D] -> float32 scores [..., N + 1] (index 0 = padding, arbitrary)."""
        return tied_logits(h.astype(self.cfg.dtype), self.item_embed.embedding, self.cfg.vocab_size)

    def step_scores(self, h):
        """`score_all` inside a decoder's loop (`whole_table_logits`: no copy of `table[:V]`
        per step)."""
        return whole_table_logits(h.astype(self.cfg.dtype), self.item_embed.embedding,
                                  self.cfg.vocab_size)


class BiasedItemScores:
    """Mixin of the next-item models with an output bias `self.output_item_bias` [N + 1] beside
    an output item table: the input table `self.item_embed` (tied; BPR-MF, BERT4Rec) or a table
    of its own, `self.output_item_embed` (GRU4Rec+, Caser), named by the class attribute
    OUTPUT_TABLE. The method side's `item_vectors`, `item_bias`, `score_all`."""

    OUTPUT_TABLE = 'item_embed'

    def _output_table(self):
        return getattr(self, self.OUTPUT_TABLE).embedding

    def item_vectors(self, ids):
        """ids [...] -> output table rows [..., D]."""
        return lookup(self._output_table(), ids, self.cfg.dtype)

    def item_bias(self, ids):
        """ids [...] -> output bias [...] float32."""
        return jnp.take(self.output_item_bias, ids, axis=0, mode='clip')

    def score_all(self, h):
        """h [..., D] -> float32 scores [..., N + 1] (index 0 = padding, arbitrary; no id past N)."""
        v = self.cfg.vocab_size
        return tied_logits(h.astype(self.cfg.dtype), self._output_table(), v) + self.output_item_bias[:v]


class ItemVocabulary:
    """Mixin of the model configs: the ids and table sizes that follow from `num_items` (N), and
    the checks every config shares (its frozen dataclass calls `__post_init__`)."""

    def __post_init__(self):
        """dtype made canonical; N >= 1; and, for the fields a config has: num_users >= 0,
        max_len >= 1, num_steps >= 1, embed_dim a multiple of num_heads."""
        object.__setattr__(self, 'dtype', canonical_dtype(self.dtype))
        if self.num_items < 1:
            raise ValueError(f'num_items must be >= 1, got {self.num_items}')
        for name, least in (('num_users', 0), ('max_len', 1), ('num_steps', 1)):
            if hasattr(self, name) and getattr(self, name) < least:
                raise ValueError(f'{name} must be >= {least}, got {getattr(self, name)}')
        if hasattr(self, 'num_heads') and self.embed_dim % self.num_heads:
            raise ValueError(f'embed_dim={self.embed_dim} is not a multiple of '
                             f'num_heads={self.num_heads}')

    @property
    def bos_id(self) -> int:
        return self.num_items + 1

    @property
    def vocab_size(self) -> int:
        """Size of the logits' last axis: N + 1 (index 0 = padding)."""
        return self.num_items + 1

    @property
    def num_embeddings(self) -> int:
        return num_embedding_rows(self.num_items)
