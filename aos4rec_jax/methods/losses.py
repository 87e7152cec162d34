"""Next-item training losses, each returning (sum over the counted targets, count) so that steps
and devices average exactly. Pure jnp; `mask` marks the positions that count (target != 0).

* ``bce_sampled``: SASRec / Caser: -log sigma(s+) - sum_j log(1 - sigma(s-_j)).
* ``softmax_ce``: full softmax cross-entropy over all items (SASRec+, BERT4Rec).
* ``bpr``: BPR-MF: -log sigma(s+ - s-), averaged over the sampled negatives.
* ``bpr_max``, ``top1_max``: GRU4Rec+ (Hidasi & Karatzoglou 2018), over negatives with softmax
  weights s_j = softmax(s-)_j, plus the score regularisation of the paper.
"""
from __future__ import annotations

import functools

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


def _groups(neg, neg_valid):
    """neg: one array [..., n] or a tuple of groups [..., n_g] (their union is the row's
    negatives, never concatenated); neg_valid: None, one bool array or a tuple like neg."""
    negs = tuple(neg) if isinstance(neg, (tuple, list)) else (neg,)
    if neg_valid is None:
        valids = tuple(jnp.ones(x.shape, bool) for x in negs)
    else:
        valids = tuple(neg_valid) if isinstance(neg_valid, (tuple, list)) else (neg_valid,)
    if len(valids) != len(negs):
        raise ValueError(f'{len(negs)} negative groups but {len(valids)} validity masks')
    return negs, tuple(jnp.broadcast_to(v, x.shape) for v, x in zip(valids, negs))


def _shifted_exp(x, valid, m):
    """exp(x - m) at the valid entries of x [..., n], 0 elsewhere (m [...] the row's shift)."""
    return jnp.where(valid, jnp.exp(x - m[..., None]), 0.0)


def _softmax_stats(negs, valids):
    """(m, [e_g], Z): the row maximum m [...] over the valid negatives of every group (0 where
    there is none), e_g = exp(neg - m) at valid entries and 0 elsewhere, Z [...] = the sum of
    every e_g (1 where it is 0). The softmax weights are e_g / Z."""
    m = functools.reduce(jnp.maximum, [jnp.max(jnp.where(v, x, NEG_INF), axis=-1)
                                       for x, v in zip(negs, valids)])
    m = jnp.where(m > NEG_INF / 2, m, 0.0)
    es = [_shifted_exp(x, v, m) for x, v in zip(negs, valids)]
    z = sum(jnp.sum(e, axis=-1) for e in es)
    return m, es, jnp.where(z > 0, z, 1.0)


# BPR-max and TOP1-max are written as custom VJPs over groups of negatives: autodiff of the
# softmax-weighted sums over the concatenated scores ([B, L, n]: 6,400 x 2,176 a GRU4Rec+ step)
# made XLA read and write 3.96 GB a step; the hand-written gradient recomputes the weights from
# the scores in one elementwise pass per group (1.91 GB): a GRU4Rec+ step 2.75-3.0x faster on a
# CPU (docs/results/next_item_notes.md, "GRU4Rec+ step time"); same values and gradients to
# float32 rounding (tests/test_methods.py, against autodiff).
@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _bpr_max_per(pos, negs, valids, reg):
    return _bpr_max_fwd(pos, negs, valids, reg)[0]


def _bpr_max_fwd(pos, negs, valids, reg):
    m, es, z = _softmax_stats(negs, valids)
    sig = [jax.nn.sigmoid(pos[..., None] - x) for x in negs]
    p = sum(jnp.sum(e * g, axis=-1) for e, g in zip(es, sig)) / z
    q = sum(jnp.sum(e * jnp.square(x), axis=-1) for e, x in zip(es, negs)) / z
    c = sum(jnp.sum(e * g * (1.0 - g), axis=-1) for e, g in zip(es, sig)) / z
    per = -jnp.log(p + 1e-24) + reg * q
    return per, (pos, negs, valids, m, z, p, q, c)


def _bpr_max_bwd(reg, res, ct):
    pos, negs, valids, m, z, p, q, c = res
    inv = 1.0 / (p + 1e-24)
    grads = []
    for x, v in zip(negs, valids):
        s = _shifted_exp(x, v, m) / z[..., None]
        g = jax.nn.sigmoid(pos[..., None] - x)
        d = (-(g - p[..., None] - g * (1.0 - g)) * inv[..., None]
             + reg * (jnp.square(x) - q[..., None] + 2.0 * x))
        grads.append(ct[..., None] * s * d)
    return -ct * c * inv, tuple(grads), None


_bpr_max_per.defvjp(_bpr_max_fwd, _bpr_max_bwd)


def bpr_max(pos, neg, mask, neg_valid=None, reg: float = 1.0):
    """GRU4Rec+ BPR-max: -log sum_j s_j sigma(r_i - r_j) + reg * sum_j s_j r_j^2, with
    s = softmax over the row's valid negatives (invalid ones get no weight).

    pos [...]; neg [..., n] or a tuple of groups [..., n_g] (e.g. the in-batch targets and the
    shared extra samples, scored separately and never concatenated); neg_valid None (all valid)
    or bool arrays like neg (broadcastable)."""
    negs, valids = _groups(neg, neg_valid)
    return _masked(_bpr_max_per(pos, negs, valids, float(reg)), mask)


@jax.custom_vjp
def _top1_max_per(pos, negs, valids):
    return _top1_max_fwd(pos, negs, valids)[0]


def _top1_terms(pos, x):
    a = jax.nn.sigmoid(x - pos[..., None])
    b = jax.nn.sigmoid(jnp.square(x))
    return a, b


def _top1_max_fwd(pos, negs, valids):
    m, es, z = _softmax_stats(negs, valids)
    u_sum, da_sum = 0.0, 0.0
    for e, x in zip(es, negs):
        a, b = _top1_terms(pos, x)
        u_sum = u_sum + jnp.sum(e * (a + b), axis=-1)
        da_sum = da_sum + jnp.sum(e * a * (1.0 - a), axis=-1)
    per = u_sum / z
    return per, (pos, negs, valids, m, z, per, da_sum / z)


def _top1_max_bwd(res, ct):
    pos, negs, valids, m, z, u, da = res
    grads = []
    for x, v in zip(negs, valids):
        s = _shifted_exp(x, v, m) / z[..., None]
        a, b = _top1_terms(pos, x)
        d = (a + b) - u[..., None] + a * (1.0 - a) + b * (1.0 - b) * 2.0 * x
        grads.append(ct[..., None] * s * d)
    return -ct * da, tuple(grads), None


_top1_max_per.defvjp(_top1_max_fwd, _top1_max_bwd)


def top1_max(pos, neg, mask, neg_valid=None):
    """GRU4Rec+ TOP1-max: sum_j s_j (sigma(r_j - r_i) + sigma(r_j^2)); arguments as bpr_max."""
    negs, valids = _groups(neg, neg_valid)
    return _masked(_top1_max_per(pos, negs, valids), mask)
