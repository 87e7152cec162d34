"""Categorical draws by inverse CDF, shared by the methods that sample items in a training step.

`jax.random.categorical` draws by Gumbel-max: V Gumbel numbers for every draw. Where a step
draws many items over a large item set (IRGAN's generator, GRU4Rec+'s extra negatives, Eq. 8's
successors, CRR's sampled actions) that noise costs more than the rest of the draw on a CPU
(docs/benchmarks.md, "Eq. 8's successors by inverse CDF"). Here a draw is one uniform, located
in the row's cumulative weights by binary search: the same distribution, other draws for a key.
`decoding.sample(method='categorical')` does the same per decoding step, with its own keys.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# the values of every option that picks how a training step draws items (aos4rec.successor_sampler,
# gru4rec.sampler, crr.sampler, seqgan.sampler): inverse CDF, or the Gumbel-max draws of the runs
# written before 2026-12-06
SAMPLERS = ('inverse_cdf', 'gumbel')


def locate(weights: jax.Array, u: jax.Array) -> jax.Array:
    """The item each uniform falls on: for u [..., num] in [0, 1), the first index i of the
    unnormalised weights [..., V] (>= 0) whose cumulative weight exceeds u * total.

    In two levels, without a cumulative sum over V (XLA's cumsum and argmax over a row cost
    several times an elementwise pass on a CPU): the row is cut into blocks of about sqrt(V)
    entries, the blocks' sums are accumulated (a short cumsum), the block u falls in is found by
    counting the block boundaries at or below u * total, and the same is done inside that block.
    An item of weight 0 is never returned (a count of boundaries <= x stops at an item of
    positive weight). A draw that rounds onto the row's (or the block's) total falls back to the
    last item of non-zero weight there; a row of all-zero weights gives its last index (callers
    mask such rows).
    """
    w = jnp.asarray(weights, jnp.float32)
    lead, v = w.shape[:-1], w.shape[-1]
    bs = max(1, int(math.isqrt(v)))
    nb = -(-v // bs)
    if nb * bs > v:
        w = jnp.pad(w, [(0, 0)] * len(lead) + [(0, nb * bs - v)])
    blocks = w.reshape(lead + (nb, bs))
    bsum = jnp.sum(blocks, axis=-1)                                     # [..., nb]
    bcdf = jnp.cumsum(bsum, axis=-1)
    target = jnp.asarray(u, jnp.float32) * bcdf[..., -1:]              # [..., num]
    last_b = nb - 1 - jnp.argmax((bsum > 0)[..., ::-1], axis=-1)        # [...]
    blk = jnp.sum(bcdf[..., None, :] <= target[..., :, None], axis=-1)  # [..., num]
    blk = jnp.minimum(blk, last_b[..., None])
    before = jnp.where(blk > 0, jnp.take_along_axis(bcdf, jnp.maximum(blk - 1, 0), axis=-1), 0.0)
    inner = jnp.take_along_axis(blocks, blk[..., None], axis=-2)        # [..., num, bs]
    icdf = jnp.cumsum(inner, axis=-1)
    rest = jnp.maximum(target - before, 0.0)
    last_i = bs - 1 - jnp.argmax((inner > 0)[..., ::-1], axis=-1)
    i = jnp.minimum(jnp.sum(icdf <= rest[..., None], axis=-1), last_i)
    return jnp.minimum(blk * bs + i, v - 1).astype(jnp.int32)


def from_weights(key: jax.Array, weights: jax.Array, num: int) -> jax.Array:
    """`num` draws per row from the unnormalised weights [..., V] (>= 0), with replacement.

    Item i is drawn when cdf[i - 1] <= u < cdf[i], u uniform on [0, total) (``locate``): an item
    of weight 0 (padding, a banned item) is never drawn. A draw that rounds onto the row's total
    falls back to the row's last item of non-zero weight. A row of all-zero weights gives its
    last index (callers mask such rows).

    Returns:
      int32 [..., num]; the uniforms are ``jax.random.uniform(key, weights.shape[:-1] + (num,))``.
    """
    w = jnp.asarray(weights, jnp.float32)
    u = jax.random.uniform(key, w.shape[:-1] + (num,), jnp.float32)
    return locate(w, u)


def weights(logits: jax.Array) -> jax.Array:
    """softmax(logits [..., V]) up to a factor per row: exp(logits - row max), 0 where -inf (a
    row of all -inf gives all 0). What ``locate`` draws from; it divides by the total itself."""
    logits = jnp.asarray(logits, jnp.float32)
    peak = jnp.max(logits, axis=-1, keepdims=True)
    peak = jnp.where(peak > -jnp.inf, peak, 0.0)
    return jnp.where(logits > -jnp.inf, jnp.exp(logits - peak), 0.0)


def from_logits(key: jax.Array, logits: jax.Array, num: int) -> jax.Array:
    """`num` draws per row from softmax(logits [..., V]) (-inf: never drawn): int32 [..., num].
    A row whose logits are all -inf gives its last index (callers mask such rows)."""
    return from_weights(key, weights(logits), num)
