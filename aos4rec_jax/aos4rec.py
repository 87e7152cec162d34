"""Building blocks of AOS4Rec (IJCAI-20, Sec. 4): oracular learning and the SSRGAN losses.

Pure, jit-compatible functions only; no trainer, optimizer or critic network lives here. Item ids
follow docs/DESIGN.md (0 = padding, items 1..N, ``bos_id`` = N + 1 only as a decoder input).

Sec. 4.1, oracular learning
---------------------------
``mix_probability``  p = mu / (mu + exp(e / mu)), the paper's decay of the ground-truth rate
    (mu = 12 in Sec. 4.3). It is < 1 already at e = 0 (12 / 13), as the formula says.
``select_oracle``    y^o = the beam with the highest BLEU against y* (``metrics.bleu_beams``,
    PROTOCOL 5 smoothed sentence BLEU); equal BLEU -> the lower beam index (the better beam,
    since ``decoding.beam_search`` sorts beams best first).
``mix_context``      y^c_j = y*_j with probability p, else y^o_j, independently per position.
    Padded target positions stay 0 (exactly what ``seq2seq.decoder_inputs`` feeds after the end
    of y*). Choice: where the oracle has no item (0, a beam that ran out of allowed items) the
    ground-truth item is used, so a real item is always fed where y* has one.
``oracle_context`` / ``oracle_loss``  beam search of size b on ``stop_gradient(params)``
    (``decoding.beam_search`` through ``seq2seq.make_step_fn``, no item twice in a beam, the
    optional ``banned`` items excluded) -> y^o -> y^c; decoder inputs [BOS, y^c_1..y^c_{T-1}];
    the loss is the token cross entropy of the GROUND TRUTH y* under that context, returned as
    ``(loss_sum, tokens)`` like ``seq2seq.mle_loss`` (padding masked). Gradients never flow
    through the search (its outputs are integers anyway; ``stop_gradient`` also keeps autodiff
    from tracing it). The key is split once: ``k_mix, k_drop = jax.random.split(rng)``; ``k_mix``
    draws the mixing coins, ``k_drop`` is the dropout key given to ``mle_loss``.

Sec. 4.2, SSRGAN losses as functions of critic scores
-----------------------------------------------------
The critic D is not here; its scores come in as arrays. For a sequence y of length T,
``d[:, t] = D(x, y_1:t)`` for t = 0..T (``d[:, 0]`` = the empty prefix), shape [B, T + 1].
``mask`` [B, T] (bool or 0/1) marks the valid positions t = 1..T (``mask[:, t - 1]``); the same
mask is used for real and generated sequences (generate / score the fake list on the user's
target positions).

Averaging (all three losses): a per-user mean over that user's valid terms (the paper's 1/T, with
T = the user's number of valid terms), then the mean over the users that have at least one valid
term (users with none are left out, not counted as 0). Every loss is a quantity to MINIMISE with
gradient descent:

``critic_loss_eq7``  -(1/U) sum_b (1/n_b) sum_{t valid} [d_real[b, t] - d_fake[b, t]], t = 1..T.
    Its negative gradient is Eq. 7's grad D_1 (the critic ascends E[D(x,y*)] - E[D(x,y^)]).
``td0_loss_eq8``     for t = 1..T-1: target_t = mean over the c sampled y' of D(x, {y^_1:t-1, y'})
    = ``mean(d_next[:, t-1, :])``, value D_t = D(x, y^_1:t-1) = ``d_prefix[:, t-1]``;
    loss = per-user mean / user mean of 0.5 (stop_gradient(target_t) - D_t)^2 over t with
    ``mask[:, t-1]``, so its gradient is -(target_t - D_t) grad D_t / (n_b U): Eq. 8's grad D_2
    with a minus sign (semi-gradient TD(0): nothing flows into ``d_next``). ``d_next`` has T rows
    so that ``sample_next_items`` output can be scored as is; row T - 1 (after y^_1:T-1) is not
    used, as Eq. 8's sum stops at T - 1.
``generator_loss_eq4`` A_t = stop_gradient(gamma D(x, y^_1:t) - D(x, y^_1:t-1)), t = 1..T;
    loss = -per-user mean / user mean of A_t log P_G(y^_t | x, y^_1:t-1), so its negative gradient
    is Eq. 4's grad G (the generator ascends E[D(x, y^)]); no gradient reaches the critic scores.
``sample_next_items`` the c successors y' per step of Eq. 8: c INDEPENDENT draws (with
    replacement; Gumbel-max, Sec. 4.3's Gumbel noise) from P_G at the sampling temperature (the
    one the generated lists are drawn at), never padding, banned items or (optionally) the items
    already in the prefix. Independent draws make Eq. 8's target mean_k D(x, {y^_1:t-1, y'_k})
    an unbiased estimate of E_{y' ~ P_G} D(x, {y^_1:t-1, y'}); c distinct draws (Gumbel-top-k)
    are not: a policy that puts 0.9 on one of two items would still get each counted half.
    ``logits[:, t]`` must be the distribution of the item at position t + 1 given y^_1:t
    (teacher forcing on [BOS, y^_1..y^_{T-1}]), so ``out[:, t-1, :]`` are the y' of Eq. 8's
    step t.
``critic_separation`` what the critic tells apart, from its scores of real and generated lists
    of the same users: the Wasserstein estimate (= -Eq. 7's loss), the AUC of the users' mean
    real-list scores against their mean generated-list scores over all (real, generated) pairs,
    and the mean and standard deviation of Eq. 4's advantage over the generated lists' positions.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from aos4rec_jax import decoding
from aos4rec_jax import metrics
from aos4rec_jax import sampling
from aos4rec_jax import seq2seq

__all__ = [
    "mix_probability",
    "select_oracle",
    "mix_context",
    "oracle_context",
    "oracle_loss",
    "critic_loss_eq7",
    "td0_loss_eq8",
    "generator_loss_eq4",
    "sample_next_items",
    "critic_separation",
]


# --------------------------------------------------------------------------------------------
# Sec. 4.1: oracular learning
# --------------------------------------------------------------------------------------------
def mix_probability(epoch, mu=12.0):
    """p = mu / (mu + exp(epoch / mu)): the probability of feeding the ground-truth item.

    A Python float for Python numbers, a float32 jnp scalar/array otherwise (traceable).
    """
    if isinstance(epoch, (int, float)) and isinstance(mu, (int, float)):
        return float(mu) / (float(mu) + math.exp(float(epoch) / float(mu)))
    epoch = jnp.asarray(epoch, jnp.float32)
    mu = jnp.asarray(mu, jnp.float32)
    return mu / (mu + jnp.exp(epoch / mu))


def select_oracle(candidates: jax.Array, target: jax.Array) -> jax.Array:
    """The oracle y^o: the candidate with the highest BLEU against y*.

    Args:
      candidates: int32 [B, b, T] (e.g. beam-search sequences, 0 = empty slot).
      target: int32 [B, T] ground truth, padded with 0 at the end.
    Returns:
      int32 [B, T]; ties go to the lower beam index (``argmax`` takes the first maximum).
    """
    candidates = jnp.asarray(candidates, jnp.int32)
    scores = metrics.bleu_beams(candidates, target)  # [B, b]
    best = jnp.argmax(scores, axis=-1)
    return jnp.take_along_axis(candidates, best[:, None, None], axis=1)[:, 0]


def mix_context(rng: jax.Array, target: jax.Array, oracle: jax.Array, p) -> jax.Array:
    """The context y^c: per position y*_j with probability p, else y^o_j.

    Padded target positions (0) stay 0; an empty oracle slot (0) falls back to y*_j.

    Args:
      rng: one PRNG key.
      target: int32 [B, T] ground truth (0 = padding).
      oracle: int32 [B, T].
      p: probability of the ground truth (float or traced scalar).
    Returns:
      int32 [B, T].
    """
    target = jnp.asarray(target, jnp.int32)
    oracle = jnp.asarray(oracle, jnp.int32)
    use_truth = jax.random.bernoulli(rng, jnp.asarray(p, jnp.float32), target.shape)
    use_truth = use_truth | (oracle == decoding.PAD_ID)
    context = jnp.where(use_truth, target, oracle)
    return jnp.where(target > 0, context, decoding.PAD_ID).astype(jnp.int32)


@jax.named_scope('oracle_beam')    # a name in profiles (benchmarks/op_profile.py) only
def oracle_context(params, model, history, target, rng, *, p, bos_id: int, vocab_size: int,
                   beam_size: int = 5, banned=None):
    """Beam search -> BLEU oracle -> mixed context (no gradient).

    Args:
      params: model parameters (only their stop_gradient is used).
      model: a seq2seq model (docs/DESIGN.md model contract).
      history: int32 [B, L]; target: int32 [B, T].
      rng: the mixing key.
      p: ground-truth probability; bos_id, vocab_size: as in docs/DESIGN.md.
      beam_size: b; banned: bool [B, V] or None (items never generated).
    Returns:
      (context [B, T], oracle [B, T], candidates [B, b, T]).
    """
    frozen = jax.lax.stop_gradient(params)
    batch, length = target.shape
    state = model.apply({'params': frozen}, history, length, method=model.init_decode_state)
    out = decoding.beam_search(seq2seq.make_step_fn(model, frozen), state, batch_size=batch,
                               vocab_size=vocab_size, length=length, bos_id=bos_id,
                               beam_size=beam_size, banned=banned, ban_generated=True)
    candidates = jax.lax.stop_gradient(out.sequences)
    oracle = select_oracle(candidates, target)
    return mix_context(rng, target, oracle, p), oracle, candidates


def oracle_loss(params, model, history, target, rng, *, p, bos_id: int, vocab_size: int,
                beam_size: int = 5, banned=None, train: bool = True, chunk: int = 0):
    """Oracular-learning loss: cross entropy of y* under decoder inputs [BOS, y^c_1..y^c_{T-1}].

    ``k_mix, k_drop = jax.random.split(rng)``: ``k_mix`` mixes the context, ``k_drop`` is the
    dropout key of the teacher-forced pass. Returns (sum of token losses, number of target
    tokens), exactly like ``seq2seq.mle_loss`` (which it equals at p = 1).
    """
    k_mix, k_drop = jax.random.split(rng)
    context, _, _ = oracle_context(params, model, history, target, k_mix, p=p, bos_id=bos_id,
                                   vocab_size=vocab_size, beam_size=beam_size, banned=banned)
    dec_in = seq2seq.decoder_inputs(context, bos_id)
    return seq2seq.mle_loss(params, model, history, target, dec_in, k_drop, train=train, chunk=chunk)


# --------------------------------------------------------------------------------------------
# Sec. 4.2: SSRGAN losses on critic scores
# --------------------------------------------------------------------------------------------
def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Per-row mean over the mask, then the mean over rows with at least one valid entry."""
    mask = jnp.asarray(mask).astype(jnp.float32)
    count = jnp.sum(mask, axis=-1)
    per_row = jnp.sum(values * mask, axis=-1) / jnp.maximum(count, 1.0)
    rows = (count > 0).astype(jnp.float32)
    return jnp.sum(per_row * rows) / jnp.maximum(jnp.sum(rows), 1.0)


def _check_scores(d: jax.Array, mask: jax.Array, name: str) -> None:
    if d.ndim != 2 or mask.ndim != 2 or d.shape != (mask.shape[0], mask.shape[1] + 1):
        raise ValueError(f"{name} must be [B, T + 1] for mask [B, T]; got {d.shape}, {mask.shape}")


def critic_loss_eq7(d_real: jax.Array, d_fake: jax.Array, mask: jax.Array) -> jax.Array:
    """Critic loss (minimise) = -(Eq. 7 objective): -mean_t [D(x, y*_1:t) - D(x, y^_1:t)].

    Args:
      d_real: float [B, T + 1], D(x, y*_1:t) for t = 0..T (column 0 unused).
      d_fake: float [B, T + 1], D(x, y^_1:t) for t = 0..T (column 0 unused).
      mask: [B, T] valid positions t = 1..T.
    Returns:
      float32 scalar.
    """
    d_real, d_fake, mask = jnp.asarray(d_real), jnp.asarray(d_fake), jnp.asarray(mask)
    _check_scores(d_real, mask, 'd_real')
    _check_scores(d_fake, mask, 'd_fake')
    diff = (d_real[:, 1:] - d_fake[:, 1:]).astype(jnp.float32)
    return -_masked_mean(diff, mask)


def td0_loss_eq8(d_prefix: jax.Array, d_next: jax.Array, mask: jax.Array) -> jax.Array:
    """Semi-gradient TD(0) loss of Eq. 8: mean over t = 1..T-1 of 0.5 (sg(target_t) - D_t)^2.

    Args:
      d_prefix: float [B, T + 1], D(x, y^_1:t) for t = 0..T.
      d_next: float [B, T, c], ``d_next[:, t-1, k]`` = D(x, {y^_1:t-1, y'_k}) for the c sampled
        successors y' of step t (row T - 1 is not used).
      mask: [B, T] valid positions; term t is used where ``mask[:, t-1]``.
    Returns:
      float32 scalar; its gradient wrt D_t = d_prefix[:, t-1] is -(target_t - D_t) / (n_b U).
    """
    d_prefix, d_next, mask = jnp.asarray(d_prefix), jnp.asarray(d_next), jnp.asarray(mask)
    _check_scores(d_prefix, mask, 'd_prefix')
    if d_next.ndim != 3 or d_next.shape[:2] != mask.shape:
        raise ValueError(f"d_next must be [B, T, c] for mask {mask.shape}, got {d_next.shape}")
    length = mask.shape[1]
    target = jax.lax.stop_gradient(jnp.mean(d_next[:, :length - 1].astype(jnp.float32), axis=-1))
    value = d_prefix[:, :length - 1].astype(jnp.float32)
    return _masked_mean(0.5 * jnp.square(target - value), mask[:, :length - 1])


def generator_loss_eq4(log_probs: jax.Array, d_fake: jax.Array, mask: jax.Array,
                       gamma: float = 1.0) -> jax.Array:
    """Actor loss of Eq. 4: -mean_t A_t log P_G(y^_t | x, y^_1:t-1), A_t = sg(gamma D_t - D_t-1).

    Args:
      log_probs: float [B, T], log P_G(y^_t | x, y^_1:t-1) (differentiable wrt the generator).
      d_fake: float [B, T + 1], D(x, y^_1:t) for t = 0..T (no gradient flows into it).
      mask: [B, T] valid positions.
      gamma: discount (1 in the paper).
    Returns:
      float32 scalar.
    """
    log_probs, d_fake, mask = jnp.asarray(log_probs), jnp.asarray(d_fake), jnp.asarray(mask)
    _check_scores(d_fake, mask, 'd_fake')
    if log_probs.shape != mask.shape:
        raise ValueError(f"log_probs must be {mask.shape}, got {log_probs.shape}")
    d = jax.lax.stop_gradient(d_fake.astype(jnp.float32))
    advantage = gamma * d[:, 1:] - d[:, :-1]
    return -_masked_mean(advantage * log_probs.astype(jnp.float32), mask)


def sample_next_items(rng: jax.Array, logits: jax.Array, c: int = 3, banned=None,
                      generated=None, temperature=1.0, sampler: str = 'inverse_cdf') -> jax.Array:
    """c independent successors per position, each drawn from softmax(logits / temperature) over
    the allowed items (Eq. 8's y'; with replacement, so the mean of D over them is unbiased).

    Args:
      rng: one PRNG key.
      logits: float [B, T, V]; ``logits[:, t]`` = scores of the item at position t + 1.
      c: number of successors per position (static).
      banned: bool [B, V] or None: items never drawn (as in decoding).
      generated: int32 [B, T] or None: if given, the items ``generated[:, :t]`` are not drawn at
        position t (the generator's ban on repeats); 0 entries ban nothing.
      temperature: > 0, the temperature the generated lists are sampled at (one policy for the
        lists, Eq. 4's log-probabilities and these successors).
      sampler: how each draw is made (static); the same distribution either way.
        'inverse_cdf': one uniform per draw, located in the row's cumulative probabilities
        (binary search); 'gumbel': Gumbel-max, argmax(logits + Gumbel noise) over V, one [B, T, V]
        noise array per draw (what runs before 2026-12-06 did; about 8x slower on a CPU at
        V = 3,417-11,925, where the noise dominates a critic update).
    Returns:
      int32 [B, T, c], never 0 or banned; 0 only where a position has no allowed item at all.
    """
    if sampler not in sampling.SAMPLERS:
        raise ValueError(f'sampler must be one of {sampling.SAMPLERS}, got {sampler!r}')
    logits = jnp.asarray(logits, jnp.float32)
    b, t, v = logits.shape
    allowed = jnp.broadcast_to((jnp.arange(v) != decoding.PAD_ID)[None, None, :], (b, t, v))
    if banned is not None:
        banned = jnp.asarray(banned, bool)
        if banned.shape != (b, v):
            raise ValueError(f"banned must be [B, V] = {(b, v)}, got {banned.shape}")
        allowed = allowed & ~banned[:, None, :]
    if generated is not None:
        seen = jax.nn.one_hot(jnp.asarray(generated, jnp.int32), v, dtype=jnp.int32)  # [B, T, V]
        earlier = jnp.cumsum(seen, axis=1) - seen  # items at positions < t
        allowed = allowed & (earlier == 0)
    scaled = jnp.where(allowed, logits / jnp.asarray(temperature, jnp.float32), decoding.NEG_INF)
    any_allowed = jnp.any(allowed, axis=-1)                                     # [B, T]

    if sampler == 'gumbel':
        def draw(key):                              # Gumbel-max: one categorical draw per (b, t)
            return jnp.argmax(scaled + jax.random.gumbel(key, scaled.shape), axis=-1)

        # one [B, T, V] noise array at a time (lax.map), not c of them at once
        out = jnp.moveaxis(jax.lax.map(draw, jax.random.split(rng, c)), 0, -1)
    else:
        # inverse CDF (sampling.from_logits): a disallowed item (-inf) has probability 0 and is
        # never drawn
        out = sampling.from_logits(rng, scaled, c)
    return jnp.where(any_allowed[..., None], out, decoding.PAD_ID).astype(jnp.int32)


def critic_separation(d_real: jax.Array, d_fake: jax.Array, mask: jax.Array,
                      gamma: float = 1.0) -> dict:
    """How well the critic separates real from generated lists of the same users.

    Args:
      d_real, d_fake: float [B, T + 1], D(x, y*_1:t) and D(x, y^_1:t) for t = 0..T.
      mask: [B, T] valid positions (users with none are left out).
      gamma: Eq. 4's discount.
    Returns:
      dict of float32 scalars: ``wasserstein`` = mean over users of mean_t [D(x, y*_1:t) -
      D(x, y^_1:t)] (= -``critic_loss_eq7``); ``auc`` = P(s*_u > s^_v) + 0.5 P(s*_u = s^_v) over
      all pairs of users (u, v), s the user's mean prefix score over its valid t (the quantity
      Eq. 7 compares; 0.5 = no separation, 1 = every real list above every generated one);
      ``auc_paired`` = P(s*_u > s^_u) + 0.5 P(s*_u = s^_u) over users u: each user's real list
      against that user's own generated list. Eq. 7 and Eq. 4 compare a user's lists only with
      each other, so a score offset that depends on the user's history alone leaves the critic's
      loss and (gamma = 1) the generator's advantages unchanged, but it moves ``auc`` (pooled
      over all pairs of users) and not ``auc_paired``;
      ``adv_mean``, ``adv_std`` = mean and standard deviation of A_t = gamma D(x, y^_1:t) -
      D(x, y^_1:t-1) over every valid (user, t) of the generated lists.
    """
    d_real, d_fake = jnp.asarray(d_real, jnp.float32), jnp.asarray(d_fake, jnp.float32)
    mask = jnp.asarray(mask)
    _check_scores(d_real, mask, 'd_real')
    _check_scores(d_fake, mask, 'd_fake')
    m = mask.astype(jnp.float32)
    n = jnp.sum(m, axis=-1)
    rows = n > 0
    s_real = jnp.sum(d_real[:, 1:] * m, axis=-1) / jnp.maximum(n, 1.0)
    s_fake = jnp.sum(d_fake[:, 1:] * m, axis=-1) / jnp.maximum(n, 1.0)
    pairs = (rows[:, None] & rows[None, :]).astype(jnp.float32)
    wins = ((s_real[:, None] > s_fake[None, :]).astype(jnp.float32)
            + 0.5 * (s_real[:, None] == s_fake[None, :]).astype(jnp.float32))
    auc = jnp.sum(wins * pairs) / jnp.maximum(jnp.sum(pairs), 1.0)
    own = ((s_real > s_fake).astype(jnp.float32) + 0.5 * (s_real == s_fake).astype(jnp.float32))
    auc_paired = jnp.sum(own * rows) / jnp.maximum(jnp.sum(rows.astype(jnp.float32)), 1.0)
    adv = gamma * d_fake[:, 1:] - d_fake[:, :-1]
    total = jnp.maximum(jnp.sum(m), 1.0)
    adv_mean = jnp.sum(adv * m) / total
    adv_std = jnp.sqrt(jnp.sum(jnp.square(adv - adv_mean) * m) / total)
    return dict(wasserstein=-critic_loss_eq7(d_real, d_fake, mask), auc=auc, auc_paired=auc_paired,
                adv_mean=adv_mean, adv_std=adv_std)


# ------------------------------------------------------------------------------ the stopping rule
def critic_watch_init() -> dict:
    """The stopping rule's record of critic pretraining (a part of the train state, so that a
    resumed run decides as an uninterrupted one): the best val_auc so far (-1: none yet) and the
    step it was measured at, the measurements since (``bad``), the last val_auc, whether the
    critic has stopped (int32 0/1) and the step it stopped at (-1: not stopped)."""
    i32 = lambda v: jnp.full((), v, jnp.int32)
    f32 = lambda v: jnp.full((), v, jnp.float32)
    return dict(best_auc=f32(-1.0), best_step=i32(-1), bad=i32(0), last_auc=f32(-1.0),
                stopped=i32(0), stop_step=i32(-1))


def critic_plateau(watch: dict, auc, step, patience: int, min_delta: float) -> dict:
    """One measurement of the critic's val_auc at `step` -> the updated record.

    An improvement is ``auc > best_auc + min_delta``; it resets ``bad`` to 0, otherwise ``bad``
    grows by one. The critic stops (``stopped`` 1, ``stop_step`` = step) at the measurement that
    brings ``bad`` to ``patience``: after `patience` measurements in a row without an improvement.
    A stopped record does not change (jit-compatible: no Python branch on traced values)."""
    auc = jnp.asarray(auc, jnp.float32)
    step = jnp.asarray(step, jnp.int32)
    done = watch['stopped'] > 0
    improved = auc > watch['best_auc'] + jnp.float32(min_delta)
    bad = jnp.where(improved, 0, watch['bad'] + 1).astype(jnp.int32)
    stop = bad >= int(patience)
    new = dict(best_auc=jnp.where(improved, auc, watch['best_auc']),
               best_step=jnp.where(improved, step, watch['best_step']),
               bad=bad, last_auc=auc, stopped=stop.astype(jnp.int32),
               stop_step=jnp.where(stop, step, jnp.int32(-1)))
    return {k: jnp.where(done, watch[k], v).astype(watch[k].dtype) for k, v in new.items()}
