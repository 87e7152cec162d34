"""Softmax cross-entropy from logits, with a backward pass of one elementwise sweep.

    nll(logits [..., V], targets [...] int) -> float32 [...]:  logsumexp(logits) - logits[target]

the same value as ``-take_along_axis(log_softmax(logits), targets)``. Autodiff of that
expression sweeps the [..., V] array several times in the backward pass (a zero array and a
scatter for the gather's transpose, the softmax, their sum); profiled on the CPU at the ML-20M
size (1,280 rows x 19,296 items) those sweeps were as long as the output layer's products
(benchmarks/op_profile.py, docs/benchmarks.md). Here the backward pass is
``g * (softmax(logits) - onehot(targets))`` in one fused sweep from the saved logits and
log-normaliser: the loss and its output layer take 30% less operation time there. Same values to
float32 rounding (tests/test_softmax_xent.py).

Used by every full-softmax loss: the seq2seq MLE and oracle loss (``seq2seq.mle_loss`` without
``loss_chunk``), the next-item models' ``losses.softmax_ce``, and the log-probabilities of the
sampled lists in SSRGAN's and SeqGAN's generator updates. Entries at -inf or -1e30 (banned items)
get probability 0; a row whose entries are all -1e30 gets the uniform distribution, as
log_softmax gives it. ``chunked_softmax.nll`` is the same loss over blocks of items, for item
sets whose [..., V] arrays do not fit.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _forward(logits, targets):
    """(nll, the row maxima m, log sum exp(logits - m)): the loss as (log s) - (x_t - m), as
    log_softmax computes it (a row of -1e30 entries keeps its log V)."""
    logits = logits.astype(jnp.float32)
    m = jnp.max(logits, axis=-1, keepdims=True)
    log_s = jnp.log(jnp.sum(jnp.exp(logits - m), axis=-1))
    picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return log_s - (picked - m[..., 0]), m, log_s


@jax.custom_vjp
def nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """-log softmax(logits)[targets] over the last axis: float32 [...] (module docstring)."""
    return _forward(logits, targets)[0]


def _nll_fwd(logits, targets):
    out, m, log_s = _forward(logits, targets)
    return out, (logits, m, log_s, targets)


def _nll_bwd(res, g):
    logits, m, log_s, targets = res
    p = jnp.exp((logits.astype(jnp.float32) - m) - log_s[..., None])
    onehot = jnp.arange(logits.shape[-1], dtype=jnp.int32) == targets[..., None].astype(jnp.int32)
    d = g.astype(jnp.float32)[..., None] * (p - onehot.astype(jnp.float32))
    return d.astype(logits.dtype), None


nll.defvjp(_nll_fwd, _nll_bwd)
