"""Model-agnostic decoders: generate the next T items of each user as an ordered list.

The model is seen only through a callback (docs/DESIGN.md, "Decoding contract")::

    step_fn(state, prev_items [B'] int32, t int32 scalar) -> (logits [B', V] float32, new_state)

``state`` is a pytree whose every leaf has leading dimension B'. The decoders tile it along axis 0
for beams / samples (``[B * beams, ...]``, beam-major inside each user) and gather it when beams
are reordered, except the parts wrapped in ``PerUser``: those (e.g. an encoder's output and its
cross-attention keys / values) are the same for every beam / sample of a user, so they stay
``[B, ...]``, are never tiled nor gathered, and ``step_fn`` broadcasts them itself (it sees
``B' = B * n`` rows of the rest and ``n = B' // B``). Beam search and multi-sequence sampling
run step 0 once per user (``B' = B``: all rows of a user start from the same state and BOS) and
tile the state after it, so a step function must not depend on the row count (what differs
between the rows of a user is the decoder's business: ``sample``'s ``prefix``). Every decoder is
a fixed-length ``lax.scan`` over T steps (beam search: T - 1 after step 0), vectorised over the
batch, jit-able with ``step_fn`` and the integer / string options bound by ``functools.partial``.
Nothing here is jitted by itself, so the decoders compose inside a caller's jitted eval step.

Vocabulary (docs/DESIGN.md, "Item ids"): index 0 is padding and is never output (always masked);
items are 1..V-1; the first decoder input is ``bos_id`` (typically V, outside the logits), which
is only passed on to ``step_fn``.

Options shared by every strategy
--------------------------------
``candidates: int32 [B, C] | None``
    Generate only among these items (the sampled protocol, C = 1000). The step's logits are
    gathered at the candidate ids and the whole search runs in the compact C-space (no
    ``[B * beams, V]`` mask is built); indices are mapped back to item ids at the end. Entries
    0 (padding) and ids outside 1..V-1 are never chosen; a repeated id counts once.
``banned: bool [B, V] | None``
    Items that may not be generated (e.g. the user's history); gathered at the candidates in
    candidate mode.
``ban_generated: bool = True``
    No item twice in one list: items already generated in the same beam / sample are masked.

The *allowed distribution* of a step is ``log_softmax`` of the logits over the items allowed at
that step (not padding, not banned, in the candidates, not yet generated in that beam/sample when
``ban_generated``). Beam scores, greedy scores and sampled log-probabilities are sums / values of
this distribution at temperature 1. An item whose logit is -inf has probability 0 and counts as
not allowed.

Fewer allowed items than T
--------------------------
When a beam / sample has no allowed item left at step t (e.g. 3 allowed items and T = 5 with
``ban_generated``), it emits item 0 (padding, "no item") at that step with log-probability 0, so
its score is unchanged: the list is the best / sampled list of the allowed items, padded with 0
at the end. Beam search additionally fills beams that cannot be made distinct (fewer allowed
continuations than ``beam_size``) with score ``-inf`` and item 0 from the step where they die;
they are sorted last. Downstream metrics must treat 0 as "no item".

Ties
----
Equal scores are broken towards the lower item id (``lax.top_k`` / ``argmax`` order): the
candidates are sorted by item id once, so the compact space keeps the vocabulary's order and a
candidate search over all items equals the full-vocabulary search exactly. In beam search,
equal extensions go to the lower (better) parent beam first, then to the lower item id.

Randomness
----------
``rng`` is one key (raw ``uint32[2]`` or typed) or one key per user (``[B]`` keys). A single key
becomes per-user keys ``fold_in(rng, b)`` (b = position in the batch); each step uses
``fold_in(user_key, t)``. Passing per-user keys (e.g. ``fold_in(rng, user_id)``) makes a user's
samples independent of the batch it is in and of the batch size.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

PyTree = Any
StepFn = Callable[[PyTree, jax.Array, jax.Array], tuple[jax.Array, PyTree]]

# Masked items get a log-probability of exactly -inf (probability exactly 0), so a masked item can
# never win an argmax / top-k against an allowed one and a beam that has no valid continuation is
# recognisable by its score. t5x uses a large finite -1e7 to dodge inf - inf = NaN; here every
# place that could subtract two infinities (log_softmax of an all-masked row) is guarded instead.
NEG_INF = -jnp.inf

# Temperatures are clamped from below to this value: dividing by 0 is undefined, and at 1e-4 a
# logit gap of 0.01 already becomes 100 nats, i.e. sampling is greedy for every practical purpose.
MIN_TEMPERATURE = 1e-4

# Index 0 of the logits is padding and never a valid output (docs/DESIGN.md, "Item ids").
PAD_ID = 0

# Beam search's top-k over beam x items runs in two levels (``_top_k``) from this many entries a
# user on; below it one ``lax.top_k``.
_TWO_LEVEL_TOP_K_MIN = 16384

STRATEGIES = ("beam", "greedy", "sample", "gumbel", "multi_rra", "multi_ra")
SAMPLE_METHODS = ("categorical", "gumbel")
AGGREGATIONS = ("rra", "ra")


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------
@struct.dataclass
class PerUser:
    """The beam-invariant part of a decoding state: one entry per user, the same for every beam /
    sample of that user (an encoder's output, its cross-attention keys / values, a source mask).

    Decoders pass it to ``step_fn`` untiled, every leaf ``[B, ...]``, while every other leaf of
    the state has ``B' = B * n`` rows (n beams or samples, beam-major inside each user, so row
    ``r`` belongs to user ``r // n``); they never tile, gather or carry it through the scan.
    ``step_fn`` must return it unchanged at the same place of the state (decoders keep the
    original). Called with ``B' = B`` rows (n = 1), a model's step is its plain per-user step.

    Attributes:
      value: pytree, every leaf [B, ...].
    """
    value: PyTree


@struct.dataclass
class BeamSearchOutput:
    """Result of ``beam_search``, beams sorted best first.

    Attributes:
      sequences: int32 [B, beam_size, T] item ids; 0 where a beam had no allowed item left.
      scores: float32 [B, beam_size] sum over steps of the allowed log-probability of the chosen
        items; ``-inf`` for beams that could not be completed distinctly.
    """
    sequences: jax.Array
    scores: jax.Array


@struct.dataclass
class GreedyOutput:
    """Result of ``greedy``.

    Attributes:
      sequences: int32 [B, T] item ids; 0 where no allowed item was left.
      scores: float32 [B] sum over steps of the allowed log-probability of the chosen items.
    """
    sequences: jax.Array
    scores: jax.Array


@struct.dataclass
class SampleOutput:
    """Result of ``sample``.

    Attributes:
      sequences: int32 [B, num_samples, T] item ids; 0 where no allowed item was left.
      log_probs: float32 [B, num_samples, T] log-probability of each chosen item under the model's
        temperature-1 allowed distribution at that step (whatever temperature it was sampled at);
        0 where the item is 0. ``log_probs.sum(-1)`` is the sequence's log-likelihood under the
        masked model, the quantity a policy-gradient estimator needs.
      successors: int32 [B, num_samples, T, c] or None (``num_successors`` = 0): c items drawn
        at each step, independently and with replacement, from the distribution the step's item
        was drawn from (the same temperature, bans and candidates), i.e. c alternatives to
        ``sequences[b, j, t]`` after the same prefix; 0 where the step had no allowed item.
    """
    sequences: jax.Array
    log_probs: jax.Array
    successors: jax.Array | None = None


@struct.dataclass
class BeamState:
    """Scan carry of ``beam_search``; S is the size of the search space (V, or C with candidates).

    Attributes:
      scores: float32 [B, beam] running sum of log-probabilities; ``-inf`` for dead beams.
      indices: int32 [B, beam, T] chosen indices in the search space; S = not chosen yet / no item.
      prev_items: int32 [B * beam] item ids fed to ``step_fn`` at the next step.
      cache: pytree, every leaf [B * beam, ...]: the model's decoding state.
    """
    scores: jax.Array
    indices: jax.Array
    prev_items: jax.Array
    cache: PyTree


@struct.dataclass
class RowState:
    """Scan carry of the row-wise decoders (greedy, sampling); n rows per user (1 or samples).

    Attributes:
      indices: int32 [B, n, T] chosen indices in the search space; S = not chosen yet / no item.
      prev_items: int32 [B * n] item ids fed to ``step_fn`` at the next step.
      cache: pytree, every leaf [B * n, ...]: the model's decoding state.
      scores: float32 [B, n] running sum of the chosen items' allowed log-probabilities.
      prob_sum: float32 [B, S] sum over rows and steps of the allowed probabilities (relevance
        aggregation), or None when not requested.
    """
    indices: jax.Array
    prev_items: jax.Array
    cache: PyTree
    scores: jax.Array
    prob_sum: jax.Array | None


@struct.dataclass
class _Space:
    """The space a search runs in: the whole vocabulary or a user's candidates.

    Attributes:
      allowed: bool [B or 1, S] items that may ever be chosen (not padding / banned / duplicate).
      items: int32 [B, S] item id of each index, sorted ascending (candidate mode; 0 = not an
        item), or None (full vocabulary: index = item id).
      size: S, static.
      vocab_size: V, static.
    """
    allowed: jax.Array
    items: jax.Array | None
    size: int = struct.field(pytree_node=False)
    vocab_size: int = struct.field(pytree_node=False)

    def gather_logits(self, logits: jax.Array) -> jax.Array:
        """[B, n, V] logits -> [B, n, S] logits of the space's items."""
        if logits.shape[-1] != self.vocab_size:
            raise ValueError(f"logits have {logits.shape[-1]} entries, vocab_size is {self.vocab_size}")
        if self.items is None:
            return logits
        return jnp.take_along_axis(logits, self.items[:, None, :], axis=-1)

    def index_of(self, items: jax.Array) -> tuple[jax.Array, jax.Array]:
        """int32 [B, ...] item ids -> (int32 [B, ...] their indices in the space, bool [B, ...]
        whether the item is in the space at all; the index is meaningless where it is not)."""
        items = jnp.asarray(items, jnp.int32)
        if self.items is None:
            return items, (items > PAD_ID) & (items < self.vocab_size)
        flat = items.reshape(items.shape[0], -1)
        idx = jax.vmap(lambda row, x: jnp.searchsorted(row, x))(self.items, flat)
        idx = jnp.minimum(idx, self.size - 1)
        found = (jnp.take_along_axis(self.items, idx, axis=1) == flat) & (flat > PAD_ID)
        return idx.reshape(items.shape).astype(jnp.int32), found.reshape(items.shape)

    def to_items(self, indices: jax.Array) -> jax.Array:
        """int32 [B, ...] indices in the space (S = no item) -> int32 [B, ...] item ids (0 = none)."""
        valid = indices < self.size
        if self.items is None:
            return jnp.where(valid, indices, PAD_ID).astype(jnp.int32)
        safe = jnp.where(valid, indices, 0)
        items = jax.vmap(lambda row, idx: row[idx])(self.items, safe)
        return jnp.where(valid, items, PAD_ID).astype(jnp.int32)


# --------------------------------------------------------------------------------------------
# Beam helpers (pytrees: every leaf is handled the same way)
# --------------------------------------------------------------------------------------------
def add_beam_dim(x: PyTree, beam_size: int) -> PyTree:
    """Every leaf [B, ...] -> [B, beam_size, ...], repeated along the new axis 1."""
    def add(leaf):
        leaf = jnp.asarray(leaf)
        return jnp.broadcast_to(leaf[:, None], (leaf.shape[0], beam_size) + leaf.shape[1:])
    return jax.tree.map(add, x)


def flatten_beam_dim(x: PyTree) -> PyTree:
    """Every leaf [B, beam, ...] -> [B * beam, ...] (beam-major inside each user)."""
    return jax.tree.map(lambda leaf: leaf.reshape((-1,) + leaf.shape[2:]), x)


def unflatten_beam_dim(x: PyTree, batch_size: int, beam_size: int) -> PyTree:
    """Every leaf [B * beam, ...] -> [B, beam, ...]; inverse of ``flatten_beam_dim``."""
    def unflatten(leaf):
        if leaf.shape[0] != batch_size * beam_size:
            raise ValueError(f"leading dimension {leaf.shape[0]} != {batch_size} * {beam_size}")
        return leaf.reshape((batch_size, beam_size) + leaf.shape[1:])
    return jax.tree.map(unflatten, x)


def gather_beams(x: PyTree, beam_indices: jax.Array) -> PyTree:
    """Reorders beams: every leaf [B, old_beam, ...] -> [B, new_beam, ...].

    Args:
      x: pytree, every leaf [B, old_beam, ...].
      beam_indices: int32 [B, new_beam]; new beam j of user b is old beam ``beam_indices[b, j]``.
    """
    rows = jnp.arange(beam_indices.shape[0])[:, None]
    return jax.tree.map(lambda leaf: leaf[rows, beam_indices], x)


# --------------------------------------------------------------------------------------------
# Internals shared by the strategies
# --------------------------------------------------------------------------------------------
def _is_per_user(x) -> bool:
    return isinstance(x, PerUser)


def _split_per_user(state: PyTree):
    """state -> (rows, join): ``rows`` is the state with every ``PerUser`` node replaced by None
    (what decoders tile, gather and carry); ``join(rows')`` puts the original ``PerUser`` nodes
    back into a tree of the same structure as ``rows``."""
    rows = jax.tree.map(lambda x: None if _is_per_user(x) else x, state, is_leaf=_is_per_user)

    def join(new_rows: PyTree) -> PyTree:
        return jax.tree.map(lambda s, r: s if _is_per_user(s) else r, state, new_rows,
                            is_leaf=_is_per_user)
    return rows, join


def _rows_of(state: PyTree) -> PyTree:
    """The state returned by ``step_fn`` without its ``PerUser`` nodes (see ``_split_per_user``)."""
    return jax.tree.map(lambda x: None if _is_per_user(x) else x, state, is_leaf=_is_per_user)


def _check_state(state: PyTree, batch_size: int) -> None:
    for leaf in jax.tree.leaves(state):
        if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != batch_size:
            raise ValueError(f"every state leaf needs leading dimension batch_size={batch_size}, "
                             f"got shape {jnp.shape(leaf)}")


def _make_space(batch_size: int, vocab_size: int, candidates: jax.Array | None,
                banned: jax.Array | None) -> _Space:
    """Builds the search space and its static allowed mask."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2 (padding + one item), got {vocab_size}")
    if banned is not None:
        banned = jnp.asarray(banned, bool)
        if banned.shape != (batch_size, vocab_size):
            raise ValueError(f"banned must be [B, V] = {(batch_size, vocab_size)}, got {banned.shape}")
    if candidates is None:
        allowed = (jnp.arange(vocab_size) != PAD_ID)[None, :]
        if banned is not None:
            allowed = allowed & ~banned
        return _Space(allowed=allowed, items=None, size=vocab_size, vocab_size=vocab_size)
    candidates = jnp.asarray(candidates, jnp.int32)
    if candidates.ndim != 2 or candidates.shape[0] != batch_size:
        raise ValueError(f"candidates must be [B, C] with B={batch_size}, got {candidates.shape}")
    # Sorted by item id once, so that every tie-break in the compact space is by item id, as in
    # the full vocabulary; out-of-range ids become padding, repeats are allowed once.
    items = jnp.sort(jnp.where((candidates > PAD_ID) & (candidates < vocab_size), candidates,
                               PAD_ID), axis=-1)
    repeat = jnp.concatenate([jnp.zeros_like(items[:, :1], bool), items[:, 1:] == items[:, :-1]],
                             axis=-1)
    allowed = (items != PAD_ID) & ~repeat
    if banned is not None:
        allowed = allowed & ~jnp.take_along_axis(banned, items, axis=-1)
    return _Space(allowed=allowed, items=items, size=candidates.shape[1], vocab_size=vocab_size)


def _top_k(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """``lax.top_k(x, k)`` over the last axis of x [B, n], exactly (values, indices, and the
    lower-index-first order of ties), in two levels when n is large: the rows are cut into
    blocks of about sqrt(n / k) entries (the last one shorter when the size does not divide n),
    ``lax.top_k`` picks the k blocks with the largest maxima (ties: the lower block), and a
    second ``lax.top_k`` runs over those k blocks only, taken in index order. Every one of the k
    best entries lies in such a block: were it in another block, the maxima of the k chosen
    blocks would be k entries ranked before it. Positions past n in a gathered last block count
    as -inf entries after every real one, as they would in a padded row; the row itself is never
    padded (a copy of all of x: 40% of this function's time at the ML-20M beam size)."""
    b, n = x.shape
    chunk = int(math.sqrt(n / k))
    if n < _TWO_LEVEL_TOP_K_MIN or chunk <= k:
        return lax.top_k(x, k)
    full, rest = divmod(n, chunk)
    maxima = jnp.max(x[:, :full * chunk].reshape(b, full, chunk), axis=-1)
    if rest:
        maxima = jnp.concatenate([maxima, jnp.max(x[:, full * chunk:], axis=-1, keepdims=True)],
                                 axis=1)
    _, best = lax.top_k(maxima, k)
    best = jnp.sort(best, axis=-1)                       # index order, for the ties
    pos = (best[:, :, None] * chunk + jnp.arange(chunk, dtype=best.dtype)).reshape(b, k * chunk)
    inside = pos < n
    values = jnp.where(inside, jnp.take_along_axis(x, jnp.where(inside, pos, 0), axis=1), NEG_INF)
    values, at = lax.top_k(values, k)
    return values, jnp.take_along_axis(pos, at, axis=1)


def _allowed_log_probs(space: _Space, logits: jax.Array, indices: jax.Array,
                       ban_generated: bool) -> tuple[jax.Array, jax.Array]:
    """The step's allowed distribution.

    Args:
      space: the search space.
      logits: [B, n, V] raw logits of the step.
      indices: int32 [B, n, T] indices generated so far (S = none).
      ban_generated: mask the indices generated so far.

    Returns:
      log_probs: float32 [B, n, S], -inf for items that are not allowed.
      any_allowed: bool [B, n] whether the row has an allowed item with non-zero probability.
    """
    logits = space.gather_logits(logits.astype(jnp.float32))
    masked = jnp.where(space.allowed[:, None, :], logits, NEG_INF)
    if ban_generated:
        b, n, _ = indices.shape
        rows = jnp.arange(b)[:, None, None]
        cols = jnp.arange(n)[None, :, None]
        masked = masked.at[rows, cols, indices].set(NEG_INF, mode="drop")  # S (none) is dropped
    peak = jnp.max(masked, axis=-1, keepdims=True)
    any_allowed = peak[..., 0] > NEG_INF
    peak = jnp.where(any_allowed[..., None], peak, 0.0)  # all-masked row: avoid -inf - -inf
    log_norm = peak + jnp.log(jnp.sum(jnp.exp(masked - peak), axis=-1, keepdims=True))
    log_probs = jnp.where(any_allowed[..., None], masked - log_norm, NEG_INF)
    return log_probs, any_allowed


def _temperature(temperature) -> jax.Array:
    return jnp.maximum(jnp.asarray(temperature, jnp.float32), MIN_TEMPERATURE)


def _per_user_keys(rng: jax.Array, batch_size: int) -> jax.Array:
    """One key or [B] keys -> [B] keys (see the module docstring, "Randomness")."""
    typed = jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
    single_ndim = 0 if typed else 1
    if rng.ndim == single_ndim:
        return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, jnp.arange(batch_size))
    if rng.ndim == single_ndim + 1 and rng.shape[0] == batch_size:
        return rng
    raise ValueError(f"rng must be one key or {batch_size} keys, got shape {rng.shape}")


def _step_keys(user_keys: jax.Array, t: jax.Array) -> jax.Array:
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(user_keys, t)


def _gumbel_max(keys: jax.Array, scaled: jax.Array) -> jax.Array:
    """Gumbel-max: argmax of scaled log-probs [B, n, S] + Gumbel noise (one key per user)."""
    noise = jax.vmap(lambda key: jax.random.gumbel(key, scaled.shape[1:]))(keys)
    return jnp.argmax(scaled + noise, axis=-1).astype(jnp.int32)


def _inverse_cdf(keys: jax.Array, scaled: jax.Array) -> jax.Array:
    """Categorical sampling by inverting the CDF of softmax(scaled [B, n, S]) (one key per user).

    A different algorithm than Gumbel-max (one uniform per row instead of S Gumbels) with the same
    distribution. The first index whose cumulative mass exceeds u is taken among items of non-zero
    mass (``sampling.locate``: in two levels, blocks then items, without a cumsum or argmax over
    S); if rounding leaves none (probability ~1e-7), the last item of non-zero mass is taken.
    """
    from aos4rec_jax import sampling           # no cycle: sampling imports only jax
    u = jax.vmap(lambda key: jax.random.uniform(key, scaled.shape[1:2]))(keys)
    return sampling.locate(sampling.weights(scaled), u[..., None])[..., 0]


def _decode_rows(step_fn: StepFn, state: PyTree, space: _Space, choose, *, batch_size: int,
                 num_rows: int, length: int, bos_id: int, ban_generated: bool,
                 sum_probs: bool = False, share_first_step: bool = False,
                 prefix: jax.Array | None = None):
    """Row-wise decoding (no reordering): each of the n rows of a user picks one index per step.

    Args:
      choose: ``choose(t, log_probs [B, n, S]) -> int32 [B, n]`` or ``-> (int32 [B, n], int32
        [B, n, c])``: the row's index, and optionally c more indices drawn from the same step
        distribution (``sample``'s successors); rows with no allowed item are overridden to "no
        item" afterwards (all c of them too).
      sum_probs: also accumulate the allowed probabilities into ``prob_sum [B, S]``.
      share_first_step: run step 0 once per user (``step_fn`` sees B rows, then B * n): the n
        rows of a user start from the same state and BOS, so their step-0 logits are equal
        (the decoding contract: a step function does not depend on the row count).
      prefix: int32 [B, n, T] item ids or None: row (b, j) emits prefix[b, j, t] wherever it is
        > 0 instead of its choice (``sample``'s forced prefix); applied after the step's
        logits, per row, so it holds with ``share_first_step`` too.

    Returns:
      indices: int32 [B, n, T] (S = no item); log_probs: float32 [B, n, T]; scores: float32 [B, n]
      (their running sum, accumulated as beam search does); prob_sum [B, S] | None; the extra
      indices of ``choose`` [B, n, T, c] (S = no item) | None.
    """
    _check_state(state, batch_size)
    b, n, size = batch_size, num_rows, space.size
    if prefix is not None:
        prefix = jnp.asarray(prefix, jnp.int32)
        if prefix.shape != (b, n, length):
            raise ValueError(f"prefix must be [B, n, T] = {(b, n, length)}, got {prefix.shape}")
    rows, join = _split_per_user(state)

    def body(carry: RowState, t, first=None):
        if first is None:
            logits, cache = step_fn(join(carry.cache), carry.prev_items, t)
            cache = _rows_of(cache)
            log_probs, any_allowed = _allowed_log_probs(
                space, unflatten_beam_dim(logits, b, n), carry.indices, ban_generated)
        else:  # step 0 computed once per user: broadcast to the user's n rows
            log_probs, any_allowed, cache = first
            log_probs = jnp.broadcast_to(log_probs, (b, n, size))
            any_allowed = jnp.broadcast_to(any_allowed, (b, n))
        index = choose(t, log_probs)
        extra = None
        if isinstance(index, tuple):
            index, extra = index
            extra = jnp.where(any_allowed[..., None], extra, size).astype(jnp.int32)
        chosen = jnp.take_along_axis(log_probs, index[..., None], axis=-1)[..., 0]
        index = jnp.where(any_allowed, index, size)
        chosen = jnp.where(any_allowed, chosen, 0.0)
        if prefix is not None:
            index, chosen = _force(space, prefix[:, :, t], index, chosen, log_probs,
                                   carry.indices, ban_generated)
        prob_sum = carry.prob_sum
        if prob_sum is not None:
            prob_sum = prob_sum + jnp.sum(jnp.exp(log_probs), axis=1)  # exp(-inf) = 0
        new = RowState(indices=carry.indices.at[:, :, t].set(index),
                       prev_items=flatten_beam_dim(space.to_items(index)),
                       cache=cache, scores=carry.scores + chosen, prob_sum=prob_sum)
        return new, (chosen, extra)

    init = RowState(
        indices=jnp.full((b, n, length), size, jnp.int32),
        prev_items=jnp.full((b * n,), bos_id, jnp.int32),
        cache=None,
        scores=jnp.zeros((b, n), jnp.float32),
        prob_sum=jnp.zeros((b, size), jnp.float32) if sum_probs else None)
    if share_first_step and n > 1 and length > 0:
        t0 = jnp.zeros((), jnp.int32)
        logits, cache = step_fn(state, jnp.full((b,), bos_id, jnp.int32), t0)
        log_probs, any_allowed = _allowed_log_probs(
            space, logits[:, None, :], init.indices[:, :1], ban_generated)
        cache = flatten_beam_dim(add_beam_dim(_rows_of(cache), n))
        init, out0 = body(init, t0, first=(log_probs, any_allowed, cache))
        final, out = lax.scan(body, init, jnp.arange(1, length, dtype=jnp.int32))
        out = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b], axis=0), out0, out)
    else:
        init = init.replace(cache=flatten_beam_dim(add_beam_dim(rows, n)))
        final, out = lax.scan(body, init, jnp.arange(length, dtype=jnp.int32))
    chosen, extra = out
    extra = None if extra is None else jnp.moveaxis(extra, 0, 2)      # [B, n, T, ...]
    return final.indices, jnp.moveaxis(chosen, 0, -1), final.scores, final.prob_sum, extra


def _force(space: _Space, items: jax.Array, index: jax.Array, chosen: jax.Array,
           log_probs: jax.Array, indices: jax.Array, ban_generated: bool):
    """One step of a forced prefix: rows whose forced item ``items`` [B, n] is > 0 take it
    (its index, and its allowed log-probability under the step's distribution) instead of
    ``index`` / ``chosen`` [B, n]; a forced item that is not allowed at this step (not in the
    space, banned, or already in the row's list with ``ban_generated``) gives "no item" with
    log-probability 0, as a row with nothing allowed does. Whether it is allowed is read from the
    masks, not from the step's logits (a forced item is emitted whatever the model thinks)."""
    forced = items > PAD_ID
    f_idx, ok = space.index_of(items)
    f_idx = jnp.where(ok, f_idx, 0)
    allowed = jnp.broadcast_to(space.allowed, (index.shape[0], space.size))
    ok = ok & jnp.take_along_axis(allowed, f_idx, axis=1)
    if ban_generated:
        ok = ok & ~jnp.any(indices == f_idx[..., None], axis=-1)
    f_lp = jnp.take_along_axis(log_probs, f_idx[..., None], axis=-1)[..., 0]
    index = jnp.where(forced, jnp.where(ok, f_idx, space.size), index)
    chosen = jnp.where(forced, jnp.where(ok, f_lp, 0.0), chosen)
    return index, chosen


def _rank(space: _Space, scores: jax.Array, k: int) -> jax.Array:
    """Top-k allowed items of scores [B, S], distinct, ties broken by the lower item id.

    Returns int32 [B, k] item ids; 0 fills the slots beyond the number of allowed items.
    """
    scores = jnp.where(space.allowed, scores, NEG_INF)
    picked, order = lax.top_k(scores, min(k, space.size))  # space order is item-id order
    items = jnp.where(picked > NEG_INF, space.to_items(order), PAD_ID)
    if k > space.size:
        items = jnp.pad(items, ((0, 0), (0, k - space.size)))
    return items.astype(jnp.int32)


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------
def beam_search(step_fn: StepFn, state: PyTree, *, batch_size: int, vocab_size: int,
                length: int, bos_id: int, beam_size: int = 5,
                candidates: jax.Array | None = None, banned: jax.Array | None = None,
                ban_generated: bool = True) -> BeamSearchOutput:
    """Fixed-length beam search (no EOS, no length penalty).

    At every step each of the ``beam_size`` beams of a user is extended by every allowed item and
    the ``beam_size`` best extensions (by the sum of allowed log-probabilities) are kept. At t = 0
    only beam 0 is live (the others score -inf), so the beams are distinct sequences.

    Args:
      step_fn: ``(state, prev_items [B'], t) -> (logits [B', V], state)``.
      state: pytree, every leaf [B, ...]; tiled to [B * beam_size, ...] and gathered on reorders,
        except its ``PerUser`` parts (kept [B, ...]).
      batch_size: B.
      vocab_size: V (index 0 = padding).
      length: T, number of items generated.
      bos_id: first decoder input (may be >= V).
      beam_size: number of beams.
      candidates: int32 [B, C] or None, see the module docstring.
      banned: bool [B, V] or None.
      ban_generated: no item twice in one beam.

    Returns:
      ``BeamSearchOutput`` with sequences [B, beam_size, T] and scores [B, beam_size], best first.
    """
    _check_state(state, batch_size)
    space = _make_space(batch_size, vocab_size, candidates, banned)
    b, k, size = batch_size, beam_size, space.size
    beam_ids = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32), (b, k))
    rows, join = _split_per_user(state)
    no_item = jnp.full((b, k), size, jnp.int32)

    def select(scores, indices, logits, n):
        """One step of the search from n live-or-dead beams per user (n = k, or 1 at t = 0 where
        the other k - 1 beams are dead copies of beam 0): (new scores [B, k], parents [B, k],
        indices chosen [B, k]). ``lax.top_k`` over beam x items in one call."""
        log_probs, any_allowed = _allowed_log_probs(
            space, unflatten_beam_dim(logits, b, n), indices, ban_generated)
        extended = scores[:, :, None] + log_probs  # [B, n, S]
        kk = min(k, n * size)
        top_scores, flat = _top_k(extended.reshape(b, n * size), kk)
        if kk < k:  # fewer (beam, item) pairs than beams: the rest are dead
            top_scores = jnp.pad(top_scores, ((0, 0), (0, k - kk)), constant_values=NEG_INF)
            flat = jnp.pad(flat, ((0, 0), (0, k - kk)))
        # A live beam with nothing left to choose continues with "no item" at an unchanged score; it
        # competes with the real extensions, after them at equal score.
        stay = jnp.where(any_allowed, NEG_INF, scores)
        if n < k:
            stay = jnp.pad(stay, ((0, 0), (0, k - n)), constant_values=NEG_INF)
        new_scores, pick = lax.top_k(jnp.concatenate([top_scores, stay], axis=1), k)
        parents = jnp.take_along_axis(
            jnp.concatenate([flat // size, beam_ids], axis=1), pick, axis=1)
        index = jnp.take_along_axis(jnp.concatenate([flat % size, no_item], axis=1), pick, axis=1)
        index = jnp.where(new_scores > NEG_INF, index, size).astype(jnp.int32)  # dead beam: no item
        return new_scores, parents, index

    def reorder(cache, parents):
        """Gathers the per-beam rows of the state (never the PerUser part)."""
        return flatten_beam_dim(gather_beams(unflatten_beam_dim(cache, b, k), parents))

    def body(carry: BeamState, t):
        logits, cache = step_fn(join(carry.cache), carry.prev_items, t)
        new_scores, parents, index = select(carry.scores, carry.indices, logits, k)
        new = BeamState(scores=new_scores,
                        indices=gather_beams(carry.indices, parents).at[:, :, t].set(index),
                        prev_items=flatten_beam_dim(space.to_items(index)),
                        cache=reorder(_rows_of(cache), parents))
        return new, None

    if k == 1 or length == 0:
        init = BeamState(
            scores=jnp.full((b, k), NEG_INF, jnp.float32).at[:, 0].set(0.0),
            indices=jnp.full((b, k, length), size, jnp.int32),
            prev_items=jnp.full((b * k,), bos_id, jnp.int32),
            cache=flatten_beam_dim(add_beam_dim(rows, k)))
        steps = jnp.arange(length, dtype=jnp.int32)
    else:
        # Step 0 once per user: every beam of a user starts from the same state and BOS, so the
        # old search's k - 1 dead copies of beam 0 are not computed; all beams then descend from
        # beam 0, and the state after the step is tiled instead of gathered.
        logits, cache = step_fn(state, jnp.full((b,), bos_id, jnp.int32), jnp.zeros((), jnp.int32))
        scores, _, index = select(jnp.zeros((b, 1), jnp.float32),
                                  jnp.full((b, 1, length), size, jnp.int32), logits, 1)
        init = BeamState(
            scores=scores,
            indices=jnp.full((b, k, length), size, jnp.int32).at[:, :, 0].set(index),
            prev_items=flatten_beam_dim(space.to_items(index)),
            cache=flatten_beam_dim(add_beam_dim(_rows_of(cache), k)))
        steps = jnp.arange(1, length, dtype=jnp.int32)
    final, _ = lax.scan(body, init, steps)
    return BeamSearchOutput(sequences=space.to_items(final.indices), scores=final.scores)


def greedy(step_fn: StepFn, state: PyTree, *, batch_size: int, vocab_size: int, length: int,
           bos_id: int, candidates: jax.Array | None = None, banned: jax.Array | None = None,
           ban_generated: bool = True) -> GreedyOutput:
    """Greedy decoding: the argmax of the allowed distribution at every step.

    Implemented independently of ``beam_search`` (argmax, no top-k, no reordering); it equals
    ``beam_search(beam_size=1)``. Arguments as in ``beam_search``.

    Returns:
      ``GreedyOutput`` with sequences [B, T] and scores [B].
    """
    space = _make_space(batch_size, vocab_size, candidates, banned)
    choose = lambda t, log_probs: jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
    indices, _, scores, _, _ = _decode_rows(
        step_fn, state, space, choose, batch_size=batch_size, num_rows=1, length=length,
        bos_id=bos_id, ban_generated=ban_generated)
    return GreedyOutput(sequences=space.to_items(indices[:, 0]), scores=scores[:, 0])


def _sampler(method: str, user_keys: jax.Array, temperature):
    if method not in SAMPLE_METHODS:
        raise ValueError(f"method must be one of {SAMPLE_METHODS}, got {method!r}")
    draw = _gumbel_max if method == "gumbel" else _inverse_cdf
    inv_temperature = 1.0 / _temperature(temperature)

    def choose(t, log_probs):
        return draw(_step_keys(user_keys, t), log_probs * inv_temperature)
    return choose


def _sampler_with_successors(method: str, user_keys: jax.Array, temperature,
                             successor_method: str, successor_keys: jax.Array, c: int):
    """``choose`` of ``_decode_rows`` that also draws c successors a row: c independent draws
    from the row's step distribution softmax(allowed log-probs / temperature), with their own
    per-user keys (``successor_keys``, one fold_in a step). successor_method 'inverse_cdf'
    (the draws of ``sampling.from_logits``) or 'gumbel' (Gumbel-max, one noise array a draw).
    When both the row's draw and the successors are by inverse CDF, the step's masses and block
    sums are computed once for the 1 + c draws (the same draws as computed apart)."""
    from aos4rec_jax import sampling           # no cycle: sampling imports only jax
    if method not in SAMPLE_METHODS:
        raise ValueError(f"method must be one of {SAMPLE_METHODS}, got {method!r}")
    if successor_method not in sampling.SAMPLERS:
        raise ValueError(f"successor_method must be one of {sampling.SAMPLERS}, "
                         f"got {successor_method!r}")
    inv_t = 1.0 / _temperature(temperature)
    plain = _sampler(method, user_keys, temperature)

    def gumbel_draws(key, scaled):              # scaled [n, S] -> [n, c]
        return jnp.stack([jnp.argmax(scaled + jax.random.gumbel(
            jax.random.fold_in(key, j), scaled.shape), axis=-1) for j in range(c)], axis=-1)

    def choose(t, log_probs):
        scaled = log_probs * inv_t
        succ_keys = _step_keys(successor_keys, t)
        if successor_method == 'gumbel':
            return plain(t, log_probs), jax.vmap(gumbel_draws)(succ_keys, scaled)
        mass = sampling.weights(scaled)                                # 0 for masked items
        # the uniforms of sampling.from_weights(key, mass of one user, c)
        u_succ = jax.vmap(lambda k: jax.random.uniform(k, scaled.shape[1:2] + (c,)))(succ_keys)
        if method == 'gumbel':
            return plain(t, log_probs), sampling.locate(mass, u_succ)
        # the uniform of _inverse_cdf, then the c successors': one search for 1 + c draws
        u = jax.vmap(lambda k: jax.random.uniform(k, scaled.shape[1:2]))(_step_keys(user_keys, t))
        idx = sampling.locate(mass, jnp.concatenate([u[..., None], u_succ], axis=-1))
        return idx[..., 0], idx[..., 1:]
    return choose


def sample(step_fn: StepFn, state: PyTree, rng: jax.Array, *, batch_size: int, vocab_size: int,
           length: int, bos_id: int, num_samples: int = 1, temperature: float = 1.0,
           method: str = "categorical", candidates: jax.Array | None = None,
           banned: jax.Array | None = None, ban_generated: bool = True,
           prefix: jax.Array | None = None, num_successors: int = 0,
           successor_rng: jax.Array | None = None,
           successor_method: str = "inverse_cdf") -> SampleOutput:
    """Ancestral sampling of ``num_samples`` independent lists per user.

    At each step the next item is drawn from ``softmax(allowed log-probs / temperature)``.

    Args:
      rng: one PRNG key or [B] keys (module docstring, "Randomness").
      num_samples: lists per user; the state is tiled to [B * num_samples, ...].
      temperature: > 0 (clamped to ``MIN_TEMPERATURE``); may be a traced scalar.
      method: 'categorical' (inverse-CDF sampling) or 'gumbel' (Gumbel-max: argmax of
        log-probs / temperature + Gumbel noise). Same distribution, different draws for one key.
      prefix: int32 [B, num_samples, length] item ids or None: a forced prefix per sample
        (roll-outs: methods/seqgan.py ``mc_rewards``). Sample j of user b emits
        ``prefix[b, j, t]`` at every step t where it is > 0 (fed to ``step_fn`` as the previous
        item of step t + 1, like a drawn one) and draws the steps where it is 0. Its
        log_probs there are the forced item's allowed log-probability; a forced item that is
        not allowed at its step (banned, already in the list, not a candidate) gives no item
        (0, log-probability 0). The draws of the other steps are those of the same call without
        ``prefix`` whenever the rows' lists so far agree (the same keys and noise). Forcing is
        the decoder's, per row, so the step function stays row-count independent.
      num_successors: c > 0 also draws ``successors`` [B, num_samples, T, c]: at every step, c
        more items from that step's distribution (temperature, bans, candidates and the row's
        earlier items as for the list's own draw), independent of the list's draw and of each
        other (with replacement). They are what a teacher-forced pass over the drawn lists would
        give to sample from, without that pass (SSRGAN's Eq. 8 successors,
        ``aos4rec.successors_from_decode``).
      successor_rng: one key or [B] keys for the successors (required when c > 0; per-user and
        per-step keys as for ``rng``).
      successor_method: 'inverse_cdf' (``sampling.from_logits``) or 'gumbel': how each successor
        is drawn; the same distribution.
      Other arguments as in ``beam_search``.

    Returns:
      ``SampleOutput`` with sequences and log_probs [B, num_samples, T]; log_probs are under the
      temperature-1 allowed distribution; successors [B, num_samples, T, c] or None.
    """
    space = _make_space(batch_size, vocab_size, candidates, banned)
    user_keys = _per_user_keys(rng, batch_size)
    if num_successors > 0:
        if successor_rng is None:
            raise ValueError("num_successors > 0 needs successor_rng")
        choose = _sampler_with_successors(method, user_keys, temperature, successor_method,
                                          _per_user_keys(successor_rng, batch_size),
                                          int(num_successors))
    else:
        choose = _sampler(method, user_keys, temperature)
    indices, log_probs, _, _, succ = _decode_rows(
        step_fn, state, space, choose, batch_size=batch_size, num_rows=num_samples,
        length=length, bos_id=bos_id, ban_generated=ban_generated, prefix=prefix)
    return SampleOutput(sequences=space.to_items(indices), log_probs=log_probs,
                        successors=None if succ is None else space.to_items(succ))


def gumbel_topk(rng: jax.Array, logits: jax.Array, k: int, mask: jax.Array | None = None, *,
                fill_value: int = PAD_ID) -> jax.Array:
    """k distinct indices drawn without replacement from softmax(logits) (Gumbel-top-k trick).

    The indices of the k largest ``logits + Gumbel noise``, in decreasing order, are distributed
    exactly as k sequential draws without replacement (Kool et al., ICML 2019): index 0 is the first
    draw, index 1 the second, and so on.

    Args:
      rng: one PRNG key (the noise has the shape of ``logits``).
      logits: float [..., V] unnormalised log-probabilities.
      k: number of draws (<= V).
      mask: bool [..., V] or None; False entries are never drawn. For item logits pass a mask that
        is False at index 0 (padding), which this generic function does not assume.
      fill_value: returned in the slots beyond the number of allowed entries of a row.

    Returns:
      int32 [..., k] indices.
    """
    logits = jnp.asarray(logits, jnp.float32)
    if k > logits.shape[-1]:
        raise ValueError(f"k={k} exceeds the number of entries {logits.shape[-1]}")
    perturbed = logits + jax.random.gumbel(rng, logits.shape)
    if mask is not None:
        perturbed = jnp.where(mask, perturbed, NEG_INF)
    values, indices = lax.top_k(perturbed, k)
    return jnp.where(values > NEG_INF, indices, fill_value).astype(jnp.int32)


def reciprocal_rank_scores(sequences: jax.Array, size: int) -> jax.Array:
    """Reciprocal rank aggregation: score[b, i] = sum over (s, t) with sequences[b, s, t] == i of
    1 / (t + 1).

    Args:
      sequences: int32 [B, N, T] indices (item ids or search-space indices); entries outside
        [0, size) are ignored. An item repeated inside one sequence counts at every position.
      size: number of scored entries.

    Returns:
      float32 [B, size].
    """
    b, n, t = sequences.shape
    weights = jnp.broadcast_to(1.0 / jnp.arange(1, t + 1, dtype=jnp.float32), (b, n, t))
    rows = jnp.arange(b)[:, None, None]
    return jnp.zeros((b, size), jnp.float32).at[rows, sequences].add(weights, mode="drop")


def top_k_items(scores: jax.Array, k: int, *, candidates: jax.Array | None = None,
                banned: jax.Array | None = None) -> jax.Array:
    """The k best-scored allowed items per user, ties broken by the lower item id.

    For one-shot rankers (next-item models) and for the multi-sequence aggregation.

    Args:
      scores: float [B, V] scores of every item id (index 0 = padding, never returned).
      k: list length.
      candidates: int32 [B, C] or None; only these items are ranked.
      banned: bool [B, V] or None; never returned.

    Returns:
      int32 [B, k] distinct items, best first; 0 in slots beyond the number of allowed items.
    """
    b, v = scores.shape
    space = _make_space(b, v, candidates, banned)
    return _rank(space, space.gather_logits(scores[:, None, :])[:, 0], k)


def multi_sequence(step_fn: StepFn, state: PyTree, rng: jax.Array, *, batch_size: int,
                   vocab_size: int, length: int, bos_id: int, k: int, num_sequences: int = 20,
                   temperature: float = 1.0, aggregation: str = "rra",
                   candidates: jax.Array | None = None, banned: jax.Array | None = None,
                   ban_generated: bool = True) -> jax.Array:
    """Multi-sequence generation with aggregation (Volodkevich et al., arXiv:2409.17730).

    Draws ``num_sequences`` lists of ``length`` items per user by temperature sampling (exactly the
    draws of ``sample(..., num_samples=num_sequences, method='categorical')`` with the same rng) and
    aggregates a score per item:

    - 'rra' (reciprocal rank aggregation): sum over sequences of 1 / (position + 1) where the item
      appears (position 0-based; every occurrence counts when ``ban_generated`` is False).
    - 'ra' (relevance aggregation): sum over sequences and steps of the item's probability under the
      model's temperature-1 allowed distribution at that step (whole distribution, so items never
      sampled still score; items already generated in that sequence have probability 0 there when
      ``ban_generated``). It is accumulated inside the scan as [B, S], never [B, N, T, V].

    The result is the top-k allowed items by aggregated score, distinct, ties broken by the lower
    item id (so allowed items that scored 0 fill the list in id order); 0 beyond the number of
    allowed items.

    Returns:
      int32 [B, k] item ids.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    space = _make_space(batch_size, vocab_size, candidates, banned)
    choose = _sampler("categorical", _per_user_keys(rng, batch_size), temperature)
    indices, _, _, prob_sum, _ = _decode_rows(
        step_fn, state, space, choose, batch_size=batch_size, num_rows=num_sequences,
        length=length, bos_id=bos_id, ban_generated=ban_generated, sum_probs=aggregation == "ra",
        share_first_step=True)
    scores = prob_sum if aggregation == "ra" else reciprocal_rank_scores(indices, space.size)
    return _rank(space, scores, k)


def generate(step_fn: StepFn, state: PyTree, rng: jax.Array | None = None, *, strategy: str,
             batch_size: int, vocab_size: int, bos_id: int, k: int, beam_size: int = 5,
             temperature: float = 1.0, num_sequences: int = 20,
             candidates: jax.Array | None = None, banned: jax.Array | None = None,
             ban_generated: bool = True) -> jax.Array:
    """One ordered list of k items per user, by the strategy named in the config.

    Strategies: 'beam' (the best beam of ``beam_search``), 'greedy', 'sample' / 'gumbel' (one
    sample, inverse-CDF / Gumbel-max, at ``temperature``), 'multi_rra' / 'multi_ra'
    (``multi_sequence`` with ``num_sequences`` lists of length k). ``rng`` is needed by the random
    strategies only.

    Returns:
      int32 [B, k] item ids (0 = no item, see the module docstring).
    """
    common = dict(batch_size=batch_size, vocab_size=vocab_size, length=k, bos_id=bos_id,
                  candidates=candidates, banned=banned, ban_generated=ban_generated)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "beam":
        return beam_search(step_fn, state, beam_size=beam_size, **common).sequences[:, 0]
    if strategy == "greedy":
        return greedy(step_fn, state, **common).sequences
    if rng is None:
        raise ValueError(f"strategy {strategy!r} needs an rng")
    if strategy in ("sample", "gumbel"):
        method = "gumbel" if strategy == "gumbel" else "categorical"
        return sample(step_fn, state, rng, num_samples=1, temperature=temperature, method=method,
                      **common).sequences[:, 0]
    return multi_sequence(step_fn, state, rng, k=k, num_sequences=num_sequences,
                          temperature=temperature, aggregation=strategy.removeprefix("multi_"),
                          **common)


def generate_sampled_and_full(step_fn: StepFn, state: PyTree, rng: jax.Array, batch: dict, *,
                              decode_cfg, vocab_size: int, bos_id: int, k: int):
    """The two lists of an evaluation batch by the configured decoder (``decode_cfg``: strategy,
    beam_size, temperature, num_sequences, ban_generated): (sampled [B, k] or None, full [B, k]).

    The sampled-protocol list is restricted to batch['candidates'] (None when the batch has
    none) and honours batch['banned_sampled'] when present (else batch['banned']); the full list
    ranks every item with batch['banned'] excluded. The two use independent keys from ``rng``.
    """
    common = dict(batch_size=batch['history'].shape[0], vocab_size=vocab_size, k=k,
                  bos_id=bos_id, strategy=decode_cfg.strategy,
                  beam_size=int(decode_cfg.beam_size), temperature=float(decode_cfg.temperature),
                  num_sequences=int(decode_cfg.num_sequences),
                  ban_generated=bool(decode_cfg.ban_generated))
    r1, r2 = jax.random.split(rng)
    sampled = None if batch.get('candidates') is None else generate(
        step_fn, state, r1, candidates=batch['candidates'],
        banned=batch.get('banned_sampled', batch['banned']), **common)
    full = generate(step_fn, state, r2, candidates=None, banned=batch['banned'], **common)
    return sampled, full
