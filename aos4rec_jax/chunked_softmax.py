"""Softmax cross-entropy over a large item set without the [N, V] logits (``config.loss_chunk``).

The seq2seq MLE loss needs -log softmax(h W^T + b)[y] for N = batch x T decoder positions over V
items. The plain way materialises the logits, their softmax and its gradient, [N, V] float32
each: at the ML-20M size (V = 19,296) and batch 1024 x 10 positions, 790 MB apiece. Here the
items are visited in chunks of C rows of W with ``lax.scan``:

  forward   a running log-sum-exp (max and sum of exp) over the chunks, and the target logit
            h . W[y] + b[y], so nll = lse - target logit;
  backward  (``jax.custom_vjp``) the chunk's logits are computed again and turned into its
            softmax p = exp(logits - lse): dh = sum_c (g p_c) W_c - g W[y],
            dW_c = (g p_c)^T h, db_c = sum_n g p_c, minus the scatter of g h and g at the targets.

Peak memory of the loss falls from O(N V) to O(N C) (plus W's gradient, [V, D] as always); the
FLOPs are those of the plain loss plus one more h W^T in the backward pass. The result equals the
plain log-softmax to float32 rounding (tests/test_chunked_softmax.py), including the padding
index 0 (the seq2seq loss normalises over all V entries, as the plain path does).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


def _blocks(w: Array, b: Array, chunk: int):
    """(w [n, C, D], b [n, C]) with V padded up to n C; padded rows get bias -inf (no mass)."""
    v, d = w.shape
    n = -(-v // chunk)
    pad = n * chunk - v
    wp = jnp.pad(w, ((0, pad), (0, 0))).reshape(n, chunk, d)
    bp = jnp.pad(b.astype(jnp.float32), (0, pad), constant_values=-jnp.inf).reshape(n, chunk)
    return wp, bp


def _logits(h, wc, bc):
    return jnp.einsum('nd,cd->nc', h, wc.astype(h.dtype), preferred_element_type=jnp.float32) + bc


def _lse(h, w, b, chunk):
    wp, bp = _blocks(w, b, chunk)

    def body(carry, xs):
        m, s = carry
        logits = _logits(h, *xs)
        m_new = jnp.maximum(m, jnp.max(logits, axis=-1))
        s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(logits - m_new[:, None]), axis=-1)
        return (m_new, s), None

    n = h.shape[0]
    init = (jnp.full((n,), -jnp.inf, jnp.float32), jnp.zeros((n,), jnp.float32))
    (m, s), _ = jax.lax.scan(body, init, (wp, bp))
    return m + jnp.log(s)


def _target_logit(h, w, b, targets):
    wt = jnp.take(w, targets, axis=0).astype(h.dtype)
    return (jnp.einsum('nd,nd->n', h, wt, preferred_element_type=jnp.float32)
            + jnp.take(b, targets).astype(jnp.float32))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _nll(h, w, b, targets, chunk):
    return _lse(h, w, b, chunk) - _target_logit(h, w, b, targets)


def _nll_fwd(h, w, b, targets, chunk):
    lse = _lse(h, w, b, chunk)
    return lse - _target_logit(h, w, b, targets), (h, w, b, targets, lse)


def _nll_bwd(chunk, res, g):
    h, w, b, targets, lse = res
    v, d = w.shape
    g = g.astype(jnp.float32)
    wp, bp = _blocks(w, b, chunk)

    def body(dh, xs):
        wc, bc = xs
        p = jnp.exp(_logits(h, wc, bc) - lse[:, None]) * g[:, None]          # [N, C]
        dh = dh + jnp.einsum('nc,cd->nd', p, wc.astype(jnp.float32))
        dwc = jnp.einsum('nc,nd->cd', p, h.astype(jnp.float32))
        return dh, (dwc, jnp.sum(p, axis=0))

    dh, (dw, db) = jax.lax.scan(body, jnp.zeros(h.shape, jnp.float32), (wp, bp))
    dw = dw.reshape(-1, d)[:v]
    db = db.reshape(-1)[:v]
    hf = h.astype(jnp.float32)
    dh = dh - g[:, None] * jnp.take(w, targets, axis=0).astype(jnp.float32)
    dw = dw.at[targets].add(-g[:, None] * hf)
    db = db.at[targets].add(-g)
    return dh.astype(h.dtype), dw.astype(w.dtype), db.astype(b.dtype), None


_nll.defvjp(_nll_fwd, _nll_bwd)


def nll(h: Array, w: Array, targets: Array, chunk: int, bias: Array | None = None) -> Array:
    """-log softmax(h W^T + bias)[targets] without the logits array.

    h [..., D] (float32 or bfloat16), w [V, D] the output table (its first V rows: the scored
    items), targets [...] int in [0, V), chunk C >= 1 items per block (C >= V: one block),
    bias [V] or None. Returns float32 [...]. Differentiable in h, w and bias."""
    lead = h.shape[:-1]
    v = w.shape[0]
    chunk = max(1, min(int(chunk), v))
    b = jnp.zeros((v,), jnp.float32) if bias is None else bias
    out = _nll(h.reshape(-1, h.shape[-1]), w, b, targets.reshape(-1).astype(jnp.int32), chunk)
    return out.reshape(lead)
