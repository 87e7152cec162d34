"""Categorical draws by inverse CDF, shared by the methods that sample items in a training step.

`jax.random.categorical` draws by Gumbel-max: V Gumbel numbers for every draw. Where a step
draws many items over a large item set (IRGAN's generator, GRU4Rec+'s extra negatives, Eq. 8's
successors, CRR's sampled actions) that noise costs more than the rest of the draw on a CPU
(docs/benchmarks.md, "Eq. 8's successors by inverse CDF"). Here a draw is one uniform, located
in the row's cumulative weights by binary search: the same distribution, other draws for a key.
`decoding.sample(method='categorical')` does the same per decoding step, with its own keys.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# the values of every option that picks how a training step draws items (aos4rec.successor_sampler,
# gru4rec.sampler, crr.sampler, seqgan.sampler): inverse CDF, or the Gumbel-max draws of the runs
# written before 2026-12-06
SAMPLERS = ('inverse_cdf', 'gumbel')


def from_weights(key: jax.Array, weights: jax.Array, num: int) -> jax.Array:
    """`num` draws per row from the unnormalised weights [..., V] (>= 0), with replacement.

    Item i is drawn when cdf[i - 1] <= u < cdf[i], u uniform on [0, total): an item of weight 0
    (padding, a banned item) is never drawn. A draw that rounds onto the row's total falls back
    to the row's last item of non-zero weight. A row of all-zero weights gives its last index
    (callers mask such rows).

    Returns:
      int32 [..., num]; the uniforms are ``jax.random.uniform(key, weights.shape[:-1] + (num,))``.
    """
    w = jnp.asarray(weights, jnp.float32)
    lead, v = w.shape[:-1], w.shape[-1]
    cdf = jnp.cumsum(w, axis=-1)
    u = jax.random.uniform(key, lead + (num,), jnp.float32) * cdf[..., -1:]
    find = jax.vmap(lambda c, x: jnp.searchsorted(c, x, side='right'))
    idx = find(cdf.reshape(-1, v), u.reshape(-1, num)).reshape(lead + (num,))
    last = v - 1 - jnp.argmax((w > 0)[..., ::-1], axis=-1)
    return jnp.minimum(idx, last[..., None]).astype(jnp.int32)


def from_logits(key: jax.Array, logits: jax.Array, num: int) -> jax.Array:
    """`num` draws per row from softmax(logits [..., V]) (-inf: never drawn): int32 [..., num].
    A row whose logits are all -inf gives its last index (callers mask such rows)."""
    logits = jnp.asarray(logits, jnp.float32)
    finite = jnp.any(logits > -jnp.inf, axis=-1, keepdims=True)
    probs = jax.nn.softmax(jnp.where(finite, logits, 0.0), axis=-1)
    return from_weights(key, jnp.where(logits > -jnp.inf, probs, 0.0), num)
