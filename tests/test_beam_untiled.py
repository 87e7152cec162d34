"""Decoding with the per-user part of the state untiled (decoding.PerUser) gives exactly the lists
of the previous implementation, which tiled every leaf of the state to [B * beams, ...] and
gathered all of it at every beam reorder.

Three references, on tiny Transformer, GRU and GPT models with random weights:
- the previous beam search, kept verbatim below (`old_beam_search`), run on the state with its
  PerUser part turned into an ordinary pytree node (`Tiled`), so that it is tiled and gathered
  like the rest and the model sees one row per user in it (n = 1);
- greedy decoding for beam 1;
- an exhaustive search on a tiny vocabulary: with as many beams as there are lists, beam search
  returns every list of distinct allowed items sorted by its score under teacher forcing.
"""
import functools
import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from jax import lax

from aos4rec_jax import decoding as dec
from aos4rec_jax import models
from aos4rec_jax.models.gpt import GPT, GPTConfig

# Every test here compiles tiny models several times (4-30 s each on the shared 2-core CPU).
pytestmark = pytest.mark.slow

L, T = 7, 3


@struct.dataclass
class Tiled:
    """An ordinary pytree node with PerUser's field: decoders tile and gather it (the old way)."""
    value: Any


def tiled_state(state):
    return {**state, 'user': Tiled(state['user'].value)}


def old_beam_search(step_fn, state, *, batch_size, vocab_size, length, bos_id, beam_size=5,
                    candidates=None, banned=None, ban_generated=True):
    """decoding.beam_search before PerUser (every leaf tiled, all of it gathered every step)."""
    space = dec._make_space(batch_size, vocab_size, candidates, banned)
    b, k, size = batch_size, beam_size, space.size
    beam_ids = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32), (b, k))

    def body(carry, t):
        logits, cache = step_fn(carry.cache, carry.prev_items, t)
        log_probs, any_allowed = dec._allowed_log_probs(
            space, dec.unflatten_beam_dim(logits, b, k), carry.indices, ban_generated)
        extended = carry.scores[:, :, None] + log_probs
        top_scores, flat = lax.top_k(extended.reshape(b, k * size), k)
        stay = jnp.where(any_allowed, dec.NEG_INF, carry.scores)
        new_scores, pick = lax.top_k(jnp.concatenate([top_scores, stay], axis=1), k)
        parents = jnp.take_along_axis(
            jnp.concatenate([flat // size, beam_ids], axis=1), pick, axis=1)
        index = jnp.take_along_axis(
            jnp.concatenate([flat % size, jnp.full((b, k), size, flat.dtype)], axis=1), pick, axis=1)
        index = jnp.where(new_scores > dec.NEG_INF, index, size).astype(jnp.int32)
        cache = dec.flatten_beam_dim(dec.gather_beams(dec.unflatten_beam_dim(cache, b, k), parents))
        new = dec.BeamState(scores=new_scores,
                            indices=dec.gather_beams(carry.indices, parents).at[:, :, t].set(index),
                            prev_items=dec.flatten_beam_dim(space.to_items(index)), cache=cache)
        return new, None

    init = dec.BeamState(
        scores=jnp.full((b, k), dec.NEG_INF, jnp.float32).at[:, 0].set(0.0),
        indices=jnp.full((b, k, length), size, jnp.int32),
        prev_items=jnp.full((b * k,), bos_id, jnp.int32),
        cache=dec.flatten_beam_dim(dec.add_beam_dim(state, k)))
    final, _ = lax.scan(body, init, jnp.arange(length, dtype=jnp.int32))
    return dec.BeamSearchOutput(sequences=space.to_items(final.indices), scores=final.scores)


@functools.lru_cache(maxsize=None)
def tiny(name, num_items=23):
    if name == 'gpt':
        model = GPT(GPTConfig(num_items=num_items, max_len=L + T, embed_dim=16, num_layers=2,
                              num_heads=2, mlp_dim=32))
    else:
        model = models.build(name, dict(num_items=num_items, embed_dim=16, hidden_dim=16,
                                        num_heads=2, num_layers=2, mlp_dim=32,
                                        max_history_len=L, max_target_len=T))
    hist = jnp.zeros((2, L), jnp.int32)
    params = model.init({'params': jax.random.key(1), 'dropout': jax.random.key(2)}, hist,
                        jnp.zeros((2, T), jnp.int32))['params']
    # Sharper logits than at initialisation, so that the searches differ from one another.
    params = jax.tree.map(lambda p: p * 4.0, params)
    return model, params


def histories(num_items, batch=5, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.integers(1, num_items + 1, size=(batch, L))
    h[0, :3] = 0                                         # left padding
    h[1, :L - 1] = 0                                     # a one-item history
    return jnp.asarray(h, jnp.int32)


def run(name, decoder, *, old_state=False, num_items=23, hist=None, **kw):
    model, params = tiny(name, num_items)
    hist = histories(num_items) if hist is None else hist
    vocab = num_items + 1
    banned = jnp.zeros((hist.shape[0], vocab), bool).at[
        jnp.arange(hist.shape[0])[:, None], hist].set(True).at[:, 0].set(False)

    @jax.jit
    def fn(params, hist, banned):
        state = model.apply({'params': params}, hist, T, method='init_decode_state')
        if old_state:
            state = tiled_state(state)

        def step(s, prev, t):
            return model.apply({'params': params}, s, prev, t, method='decode_step')
        return decoder(step, state, batch_size=hist.shape[0], vocab_size=vocab, bos_id=vocab,
                       banned=banned, **kw)
    return jax.device_get(fn(params, hist, banned))


MODELS = ('transformer', 'gru', 'gpt')


def test_states_mark_the_per_user_part():
    for name in MODELS:
        model, params = tiny(name)
        state = model.apply({'params': params}, histories(23), T, method='init_decode_state')
        assert isinstance(state['user'], dec.PerUser), name
        for leaf in jax.tree.leaves(state):
            assert leaf.shape[0] == 5


def test_step_fn_sees_per_user_leaves_untiled():
    model, params = tiny('transformer')
    seen = []

    def step(s, prev, t):
        seen.append((prev.shape[0], {x.shape[0] for x in jax.tree.leaves(s['user'])},
                     {x.shape[0] for x in jax.tree.leaves(s['layers'])}))
        return model.apply({'params': params}, s, prev, t, method='decode_step')

    state = model.apply({'params': params}, histories(23), T, method='init_decode_state')
    dec.beam_search(step, state, batch_size=5, vocab_size=24, length=T, bos_id=24, beam_size=4)
    # step 0 once per user, then 4 rows per user against the 5 users' encoder state
    assert seen == [(5, {5}, {5}), (20, {5}, {20})]
    seen.clear()
    dec.sample(step, state, jax.random.key(0), batch_size=5, vocab_size=24, length=T, bos_id=24,
               num_samples=3)
    assert seen == [(15, {5}, {15})]


@pytest.mark.parametrize('name', MODELS)
@pytest.mark.parametrize('beam', [2, 5])
@pytest.mark.parametrize('use_candidates', [False, True])
def test_beam_search_equals_the_tiled_implementation(name, beam, use_candidates):
    cands = None
    if use_candidates:
        cands = jnp.asarray(np.random.default_rng(3).integers(0, 24, size=(5, 9)), jnp.int32)
    new = run(name, functools.partial(dec.beam_search, length=T, beam_size=beam,
                                      candidates=cands))
    old = run(name, functools.partial(old_beam_search, length=T, beam_size=beam,
                                      candidates=cands), old_state=True)
    np.testing.assert_array_equal(new.sequences, old.sequences)
    np.testing.assert_allclose(new.scores, old.scores, rtol=1e-5, atol=1e-5)
    assert len(np.unique(new.sequences[:, 0], axis=0)) > 1       # not a degenerate model


@pytest.mark.parametrize('name', MODELS)
def test_beam_of_one_equals_greedy(name):
    beam = run(name, functools.partial(dec.beam_search, length=T, beam_size=1))
    greedy = run(name, functools.partial(dec.greedy, length=T))
    np.testing.assert_array_equal(beam.sequences[:, 0], greedy.sequences)
    np.testing.assert_allclose(beam.scores[:, 0], greedy.scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', MODELS)
def test_row_decoders_equal_the_tiled_implementation(name):
    for decoder in (functools.partial(dec.greedy, length=T),
                    functools.partial(dec.sample, rng=jax.random.key(5), length=T, num_samples=4,
                                      method='gumbel'),
                    functools.partial(dec.multi_sequence, rng=jax.random.key(6), length=T, k=T,
                                      num_sequences=6, aggregation='ra')):
        new = run(name, decoder)
        old = run(name, decoder, old_state=True)
        for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(old)):
            if a.dtype == np.int32:
                np.testing.assert_array_equal(a, b)
            else:
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', MODELS)
def test_beam_as_wide_as_every_list_is_an_exhaustive_search(name):
    """5 items, one banned per user, lists of 3 distinct items: 4 * 3 * 2 = 24 lists per user."""
    n_items, batch = 5, 3
    hist = jnp.asarray(np.random.default_rng(1).integers(1, n_items + 1, size=(batch, L)),
                       jnp.int32).at[:, :L - 1].set(0)              # one history item each
    lists = 4 * 3 * 2
    out = run(name, functools.partial(dec.beam_search, length=T, beam_size=lists),
              num_items=n_items, hist=hist)
    model, params = tiny(name, n_items)
    vocab = n_items + 1
    for u in range(batch):
        allowed = [i for i in range(1, vocab) if i != int(hist[u, -1])]
        perms = np.asarray(list(itertools.permutations(allowed, T)), np.int32)
        dec_in = np.concatenate([np.full((len(perms), 1), vocab), perms[:, :-1]], axis=1)
        logits = np.asarray(model.apply({'params': params}, jnp.repeat(hist[u:u + 1], len(perms), 0),
                                        jnp.asarray(dec_in)), np.float64)
        scores = np.zeros(len(perms))
        for t in range(T):
            for r, p in enumerate(perms):
                ok = [i for i in allowed if i not in p[:t]]
                lg = logits[r, t, ok]
                scores[r] += logits[r, t, p[t]] - (lg.max() + np.log(np.exp(lg - lg.max()).sum()))
        order = np.argsort(-scores, kind='stable')
        np.testing.assert_array_equal(out.sequences[u], perms[order])
        np.testing.assert_allclose(out.scores[u], scores[order], rtol=1e-4, atol=1e-4)


def test_two_level_top_k_equals_lax_top_k_with_ties_and_minus_inf():
    rng = np.random.default_rng(0)
    fn = jax.jit(lambda x: dec._top_k(x, 5))
    # 5 * 4001: a last block shorter than the others; 18,000 = 300 blocks of 60 exactly.
    for n in (5 * 4001, 18000):
        assert n >= dec._TWO_LEVEL_TOP_K_MIN             # the two-level path runs
        cases = [rng.normal(size=(4, n)),
                 np.round(rng.normal(size=(4, n)), 1),  # many ties
                 np.where(rng.random((4, n)) < 0.9995, -np.inf, rng.normal(size=(4, n))),
                 np.full((4, n), -np.inf), np.full((4, n), -np.inf)]
        cases[3][:, n - 1] = 1.0                         # one finite entry, in the last block
        cases[4][:, [0, n // 2, n - 2]] = 2.0            # three tied finite entries, far apart
        for x in cases:
            x = jnp.asarray(x, jnp.float32)
            want, got = jax.lax.top_k(x, 5), fn(x)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
