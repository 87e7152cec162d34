"""Per-user list metrics of PROTOCOL section 5, in JAX (jit- and vmap-compatible).

Conventions shared by every function here:

* ``generated``: int32 ``[..., K]``, the generated list g = (g_1..g_K). Item ids are ``>= 1``;
  ``0`` is an empty slot: it occupies a position (it counts in K and in the number of n-grams of
  g) but never matches anything.
* ``target``: int32 ``[..., M]``, the ground truth y*, padded with ``0`` at the END. m = number of
  non-zero entries (m may be smaller or larger than K). Items may repeat in y*; m counts them
  with multiplicity, the set {y*} counts them once (exactly as PROTOCOL 5 reads).
* Leading dimensions ``...`` of ``generated`` and ``target`` broadcast against each other
  (usually both are ``[B]``). Every function returns float32 of the broadcast leading shape,
  e.g. ``[B]``.
* Users with m = 0 get 0 for every metric; :func:`compute_metrics` also returns ``valid`` (m > 0)
  so the caller can exclude them from the means.
* K and M come from the static shapes; no Python loop runs over users, and the only Python loop
  (over n = 1..4 in BLEU) is unrolled at trace time.

Definitions (PROTOCOL 5):

* Prec@K  = |{g_i} ∩ {y*}| / min(K, m).
* NDCG@K  = DCG / IDCG, DCG = sum_i rel_i / log2(i + 1), rel_i = 1 iff g_i is in {y*} and g_i did
  not already appear earlier in g; IDCG = sum_{i=1..min(K,m)} 1 / log2(i + 1).
* BLEU@K  = sentence BLEU-4 of g against the single reference y*: clipped n-gram precisions p_n
  for n = 1..min(4, K) with uniform weights 1 / min(4, K), brevity penalty exp(1 - m/K) if K < m
  else 1, Chen & Cherry smoothing method 1 (an n with zero clipped matches uses
  p_n = 0.1 / (K - n + 1)). The smoothing is applied to every n, unigrams included, so a list
  with no hit at all gets a small positive BLEU (NLTK's ``sentence_bleu`` would return 0 there;
  the protocol's wording is followed instead). Reference n-grams that would contain padding do
  not exist; candidate n-grams containing an empty slot exist but never match.
* HR@K    = 1 if any g_i is in {y*}.
* MRR@K   = 1 / (rank of the first g_i in {y*}), 0 if none.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "compute_metrics",
    "precision",
    "ndcg",
    "bleu",
    "bleu_beams",
    "hit_rate",
    "mrr",
    "METRIC_NAMES",
]

METRIC_NAMES = ("prec", "ndcg", "bleu", "hr", "mrr")

_EPSILON = 0.1  # Chen & Cherry smoothing method 1
_MAX_ORDER = 4


# ----------------------------------------------------------------------------- helpers


def _as_int(x) -> jnp.ndarray:
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"expected an array with a trailing list axis, got shape {x.shape}")
    return x.astype(jnp.int32)


def _lead_shape(g: jnp.ndarray, r: jnp.ndarray) -> tuple:
    return jnp.broadcast_shapes(g.shape[:-1], r.shape[:-1])


def _target_len(r: jnp.ndarray) -> jnp.ndarray:
    """m = number of non-padding target entries, int32 [...]."""
    return jnp.sum(r != 0, axis=-1).astype(jnp.int32)


def _earlier_mask(n: int) -> jnp.ndarray:
    """[n, n] bool, True at (i, j) when j < i."""
    return jnp.tril(jnp.ones((n, n), dtype=bool), k=-1)


def _match_target(g: jnp.ndarray, r: jnp.ndarray) -> jnp.ndarray:
    """[..., K, M] bool: g_i == y*_j with y*_j a real (non-padding) item."""
    return (g[..., :, None] == r[..., None, :]) & (r != 0)[..., None, :]


def _hits(g: jnp.ndarray, r: jnp.ndarray):
    """Returns (in_target [..., K], first_hit [..., K]).

    in_target[i]: g_i is an item of y* (empty slots never are).
    first_hit[i]: in_target[i] and g_i does not occur at an earlier position of g.
    """
    k = g.shape[-1]
    in_target = jnp.any(_match_target(g, r), axis=-1)
    same = g[..., :, None] == g[..., None, :]  # [..., K, K]
    repeated = jnp.any(same & _earlier_mask(k), axis=-1)
    return in_target, in_target & ~repeated


def _finish(value, m, lead) -> jnp.ndarray:
    """Zero for m = 0 users, float32, broadcast to the common leading shape."""
    value = jnp.where(m > 0, value, 0.0).astype(jnp.float32)
    return jnp.broadcast_to(value, lead)


# ----------------------------------------------------------------------------- metrics


@jax.jit
def precision(generated, target) -> jnp.ndarray:
    """Prec@K = |{g_i} ∩ {y*}| / min(K, m).

    Args:
      generated: int32 [..., K] (0 = empty slot).
      target: int32 [..., M], padded with 0 at the end.
    Returns:
      float32 [...] (broadcast leading shape), 0 where m = 0.
    """
    g, r = _as_int(generated), _as_int(target)
    k = g.shape[-1]
    m = _target_len(r)
    _, first_hit = _hits(g, r)
    num = jnp.sum(first_hit, axis=-1).astype(jnp.float32)
    den = jnp.maximum(jnp.minimum(k, m), 1).astype(jnp.float32)
    return _finish(num / den, m, _lead_shape(g, r))


@jax.jit
def ndcg(generated, target) -> jnp.ndarray:
    """NDCG@K with rel_i = 1 only at the first occurrence of an item of y*; IDCG over min(K, m).

    Args/returns as :func:`precision`.
    """
    g, r = _as_int(generated), _as_int(target)
    k = g.shape[-1]
    m = _target_len(r)
    _, first_hit = _hits(g, r)
    discount = 1.0 / jnp.log2(jnp.arange(k, dtype=jnp.float32) + 2.0)  # 1/log2(i+1), i = 1..K
    dcg = jnp.sum(first_hit * discount, axis=-1)
    ideal = jnp.arange(k) < jnp.minimum(k, m)[..., None]  # [..., K]
    idcg = jnp.sum(ideal * discount, axis=-1)
    return _finish(dcg / jnp.maximum(idcg, 1e-12), m, _lead_shape(g, r))


@jax.jit
def hit_rate(generated, target) -> jnp.ndarray:
    """HR@K = 1 if any g_i is an item of y*, else 0. Args/returns as :func:`precision`."""
    g, r = _as_int(generated), _as_int(target)
    m = _target_len(r)
    in_target, _ = _hits(g, r)
    return _finish(jnp.any(in_target, axis=-1), m, _lead_shape(g, r))


@jax.jit
def mrr(generated, target) -> jnp.ndarray:
    """MRR@K = 1 / rank of the first g_i in y* (ranks from 1), 0 if none.

    Args/returns as :func:`precision`.
    """
    g, r = _as_int(generated), _as_int(target)
    m = _target_len(r)
    in_target, _ = _hits(g, r)
    first = jnp.argmax(in_target, axis=-1)
    value = jnp.where(jnp.any(in_target, axis=-1), 1.0 / (first + 1.0), 0.0)
    return _finish(value, m, _lead_shape(g, r))


@jax.jit
def bleu(generated, target) -> jnp.ndarray:
    """Sentence BLEU-4 of g against the single reference y* (see the module docstring).

    Vectorised with pairwise n-gram equality: with E1[i, j] = (g_i == g_j), the n-gram equality
    is En[i, j] = E(n-1)[i, j] & E1[i+n-1, j+n-1] (same for g against y*, where padding never
    matches, so reference n-grams that would contain padding do not exist). For the n-gram at
    position i, cg[i] = its count in g and cr[i] = its count in y*; the clipped count
    sum over distinct n-grams of min(count in g, count in y*) is the sum of min(cg, cr) over the
    first occurrence of each n-gram in g (an exact integer).

    Leading dimensions broadcast, so the beam oracle can call
    ``bleu(cands [B, b, T], target[:, None, :])`` -> [B, b] (or use :func:`bleu_beams`).

    Args:
      generated: int32 [..., K] (0 = empty slot).
      target: int32 [..., M], padded with 0 at the end.
    Returns:
      float32 [...] in [0, 1], 0 where m = 0.
    """
    g, r = _as_int(generated), _as_int(target)
    k = g.shape[-1]
    m = _target_len(r)
    lead = _lead_shape(g, r)
    if k == 0:
        return jnp.zeros(lead, jnp.float32)
    orders = min(_MAX_ORDER, k)

    eq1_gg = g[..., :, None] == g[..., None, :]  # [..., K, K]
    eq1_gr = _match_target(g, r)  # [..., K, M]
    eq_gg, eq_gr = eq1_gg, eq1_gr
    log_p = jnp.zeros((), jnp.float32)
    for n in range(1, orders + 1):
        if n > 1:
            # n-gram equality from (n-1)-gram equality; slices of empty axes stay empty when M < n.
            eq_gg = eq_gg[..., :-1, :-1] & eq1_gg[..., n - 1:, n - 1:]
            eq_gr = eq_gr[..., :-1, :-1] & eq1_gr[..., n - 1:, n - 1:]
        count = k - n + 1  # number of n-grams in g
        cg = jnp.sum(eq_gg, axis=-1)  # [..., count], >= 1
        cr = jnp.sum(eq_gr, axis=-1)  # [..., count]
        first = ~jnp.any(eq_gg & _earlier_mask(count), axis=-1)
        clipped = jnp.sum(jnp.where(first, jnp.minimum(cg, cr), 0), axis=-1).astype(jnp.float32)
        p = jnp.where(clipped > 0, clipped, _EPSILON) / count
        log_p = log_p + jnp.log(p)

    mf = m.astype(jnp.float32)
    brevity = jnp.where(k < m, jnp.exp(1.0 - mf / k), 1.0)
    value = brevity * jnp.exp(log_p / orders)
    return _finish(value, m, lead)


@jax.jit
def bleu_beams(cands, target) -> jnp.ndarray:
    """BLEU of each of b beams against the user's target.

    Args:
      cands: int32 [B, b, T] candidate lists (0 = empty slot).
      target: int32 [B, M], padded with 0 at the end.
    Returns:
      float32 [B, b]. ``jnp.argmax(bleu_beams(c, y), axis=-1)`` is the BLEU-oracle beam.
    """
    target = _as_int(target)
    return bleu(cands, target[..., None, :])


@jax.jit
def compute_metrics(generated, target) -> dict:
    """All metrics of PROTOCOL 5 for a batch.

    Args:
      generated: int32 [B, K] (or any leading shape), 0 = empty slot.
      target: int32 [B, M], padded with 0 at the end.
    Returns:
      dict with float32 [B] entries ``prec, ndcg, bleu, hr, mrr`` (0 for users with m = 0) and
      bool [B] ``valid`` (m > 0). Average a metric over users as
      ``sum(x * valid) / max(sum(valid), 1)``.
    """
    g, r = _as_int(generated), _as_int(target)
    lead = _lead_shape(g, r)
    return {
        "prec": precision(g, r),
        "ndcg": ndcg(g, r),
        "bleu": bleu(g, r),
        "hr": hit_rate(g, r),
        "mrr": mrr(g, r),
        "valid": jnp.broadcast_to(_target_len(r) > 0, lead),
    }
