"""Next-item training losses, each returning (sum over the counted targets, count) so that steps
and devices average exactly. Pure jnp; `mask` marks the positions that count (target != 0).

* ``bce_sampled``: SASRec / Caser: -log sigma(s+) - sum_j log(1 - sigma(s-_j)).
* ``softmax_ce``: full softmax cross-entropy over all items (SASRec+, BERT4Rec).
* ``bpr``: BPR-MF: -log sigma(s+ - s-), averaged over the sampled negatives.
* ``bpr_max``, ``top1_max``: GRU4Rec+ (Hidasi & Karatzoglou 2018), over negatives with softmax
  weights s_j = softmax(s-)_j, plus the score regularisation of the paper.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from aos4rec_jax import softmax_xent

NEG_INF = -1e30


def _masked(values, mask):
    m = mask.astype(jnp.float32)
    return jnp.sum(values * m), jnp.sum(m)


def bce_sampled(pos, neg, mask):
    """pos [...], neg [..., n] logits; -log sigma(pos) - sum_j log(1 - sigma(neg_j))."""
    per = -jax.nn.log_sigmoid(pos) - jnp.sum(jax.nn.log_sigmoid(-neg), axis=-1)
    return _masked(per, mask)


def softmax_ce(logits, targets, mask):
    """logits [..., V] (index 0 = padding, excluded), targets [...] item ids."""
    logits = logits.astype(jnp.float32).at[..., 0].set(NEG_INF)
    return _masked(softmax_xent.nll(logits, targets), mask)


def bpr(pos, neg, mask):
    """pos [...], neg [..., n]: mean over j of -log sigma(pos - neg_j)."""
    per = -jnp.mean(jax.nn.log_sigmoid(pos[..., None] - neg), axis=-1)
    return _masked(per, mask)


def bpr_max(pos, neg, mask, neg_valid=None, reg: float = 1.0):
    """GRU4Rec+ BPR-max: -log sum_j s_j sigma(r_i - r_j) + reg * sum_j s_j r_j^2."""
    valid = jnp.ones(neg.shape, bool) if neg_valid is None else neg_valid
    s = jax.nn.softmax(jnp.where(valid, neg, NEG_INF), axis=-1)
    s = jnp.where(valid, s, 0.0)
    p = jnp.sum(s * jax.nn.sigmoid(pos[..., None] - neg), axis=-1)
    per = -jnp.log(p + 1e-24) + reg * jnp.sum(s * jnp.square(neg), axis=-1)
    return _masked(per, mask)


def top1_max(pos, neg, mask, neg_valid=None):
    """GRU4Rec+ TOP1-max: sum_j s_j (sigma(r_j - r_i) + sigma(r_j^2))."""
    valid = jnp.ones(neg.shape, bool) if neg_valid is None else neg_valid
    s = jax.nn.softmax(jnp.where(valid, neg, NEG_INF), axis=-1)
    s = jnp.where(valid, s, 0.0)
    per = jnp.sum(s * (jax.nn.sigmoid(neg - pos[..., None]) + jax.nn.sigmoid(jnp.square(neg))), axis=-1)
    return _masked(per, mask)
