"""Tests of the GPT-style decoder-only recommender (models/gpt.py, methods/gpt.py,
experiments/configs/gpt.py): cached decoding equals teacher forcing, decoding.py's greedy on
the cache equals a no-cache reference, every strategy bans the history and its own items, and a
:tiny run through main.py learns.
"""
import functools
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aos4rec_jax import checkpoint
from aos4rec_jax import data as data_lib
from aos4rec_jax import datasets
from aos4rec_jax import decoding
from aos4rec_jax import methods
from aos4rec_jax.models.gpt import GPT, GPTConfig
from experiments.configs import gpt as gpt_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, L, T = 30, 6, 4
# Left-padded histories: full, padded with repeats, one item, none; decoder inputs with BOS at
# 0 and a 0 ("no item left", as decoding.py emits) in row 1.
HIST = jnp.array([[3, 5, 7, 9, 11, 13],
                  [0, 0, 4, 4, 8, 4],
                  [0, 0, 0, 0, 0, 2],
                  [0, 0, 0, 0, 0, 0]], jnp.int32)
DEC = jnp.array([[N + 1, 1, 2, 3],
                 [N + 1, 6, 0, 7],
                 [N + 1, 8, 9, 10],
                 [N + 1, 12, 13, 14]], jnp.int32)
jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})


@functools.lru_cache(maxsize=None)
def _model():
    model = GPT(GPTConfig(num_items=N, max_len=L + T + 2, embed_dim=16, num_layers=2,
                          num_heads=2, mlp_dim=32, dropout_rate=0.1))
    params = model.init(jax.random.PRNGKey(0), HIST, None, False, method=model.encode)['params']
    return model, params


def _step_fn(model, params):
    return lambda s, prev, t: model.apply({'params': params}, s, prev, t, method=model.decode_step)


def test_decode_step_equals_teacher_forcing_and_the_next_item_scores():
    """The cached decode (one lax.scan, a cache longer than needed) gives the logits of
    teacher forcing at every position, for padded, one-item and empty histories and a fed-back 0;
    its first step is the next-item scores of the history (what 'topk' ranks); extra left
    padding changes nothing."""
    model, params = _model()

    @jit
    def both(params, hist, dec):
        full = model.apply({'params': params}, hist, dec)
        state = model.apply({'params': params}, hist, T + 3, method=model.init_decode_state)
        step = _step_fn(model, params)

        def body(s, t):
            lg, s = step(s, dec[:, t], t)
            return s, lg
        _, stepped = jax.lax.scan(body, state, jnp.arange(T, dtype=jnp.int32))
        h = model.apply({'params': params}, hist, None, False, method=model.encode)
        first = model.apply({'params': params}, h[:, -1], method=model.score_all)
        return full, jnp.swapaxes(stepped, 0, 1), first

    full, stepped, first = (np.asarray(x) for x in both(params, HIST, DEC))
    assert full.shape == (4, T, N + 1) and np.isfinite(full).all()
    np.testing.assert_allclose(stepped, full, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(full[:, 0], first, atol=1e-5, rtol=1e-5)
    padded = jnp.pad(HIST, ((0, 0), (2, 0)))
    full_p, stepped_p, _ = (np.asarray(x) for x in both(params, padded, DEC))
    np.testing.assert_allclose(full_p, full, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(stepped_p, full, atol=1e-5, rtol=1e-5)
    # causal: changing a later decoder input leaves the earlier positions alone
    full_c, _, _ = both(params, HIST, DEC.at[:, 3].set(20))
    np.testing.assert_array_equal(np.asarray(full_c)[:, :3], full[:, :3])


def test_greedy_on_the_cache_equals_a_no_cache_reference_and_bans():
    """decoding.greedy on the KV cache picks, at every step, the argmax of the full forward over
    history ++ items so far, among items neither banned (the history) nor generated."""
    model, params = _model()
    hist = HIST[:3]
    banned = np.zeros((3, N + 1), bool)
    for b, row in enumerate(np.asarray(hist)):
        banned[b, row[row > 0]] = True
    banned = jnp.asarray(banned)

    @jit
    def run(params, hist, banned):
        state = model.apply({'params': params}, hist, T, method=model.init_decode_state)
        return decoding.greedy(_step_fn(model, params), state, batch_size=3, vocab_size=N + 1,
                               length=T, bos_id=N + 1, banned=banned).sequences

    got = np.asarray(run(params, hist, banned))
    seq = np.asarray(hist)
    ref = np.zeros((3, 0), np.int32)
    encode = jit(lambda p, s: model.apply({'params': p}, model.apply(
        {'params': p}, s, None, False, method=model.encode)[:, -1], method=model.score_all))
    for _ in range(T):
        s = np.array(encode(params, jnp.asarray(np.concatenate([seq, ref], 1))))
        s[:, 0] = -np.inf
        s[np.asarray(banned)] = -np.inf
        s[np.arange(3)[:, None], ref] = -np.inf
        ref = np.concatenate([ref, s.argmax(1)[:, None].astype(np.int32)], 1)
    np.testing.assert_array_equal(got, ref)
    assert not np.asarray(banned)[np.arange(3)[:, None], got].any()


# ------------------------------------------------------------------------------ through main.py
@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    """gpt.py:tiny,rra through main.py (40 steps; its evaluation generates 20 lists a user with
    the cache and aggregates them by reciprocal rank)."""
    wd = tmp_path_factory.mktemp('gpt_tiny')
    cmd = [sys.executable, 'main.py', '--config=experiments/configs/gpt.py:tiny,rra',
           f'--workdir={wd}', '--config.train_steps=40', '--config.log_every=10',
           '--config.eval_every=40', '--config.checkpoint_every=40',
           '--config.max_eval_users=64']
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return wd


def test_tiny_run_through_main_learns(tiny_run):
    with open(tiny_run / 'metrics' / 'train.jsonl') as f:
        recs = [json.loads(l) for l in f]
    losses = [r['loss'] for r in recs]
    assert [r['step'] for r in recs] == [10, 20, 30, 40]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.1, losses
    with open(tiny_run / 'metrics' / 'test.json') as f:
        test = json.load(f)
    assert test['decode']['strategy'] == 'multi_rra'
    assert 'KV cache' in test['decode']['note']
    assert 0.0 <= test['full']['ndcg@10'] <= 1.0


STRATEGIES = ('topk', 'greedy', 'beam', 'sample', 'gumbel', 'multi_rra', 'multi_ra')


def test_every_strategy_on_tiny_bans_history_and_generated_items(tiny_run):
    """With the run's trained parameters, each strategy of the :tiny config gives K distinct
    items a user, none of them in the user's whole history, the sampled list inside the
    candidates; greedy's first item is top-K's first."""
    c = gpt_config.get_config('tiny')
    ds = datasets.get_dataset(c, str(tiny_run), log=lambda *_: None)
    es = ds.eval_set('test')
    n = 48
    dd = ds.device_data()
    V, K = ds.info.vocab_size, ds.info.k
    banned = data_lib.history_ban_mask(dd.items, jnp.asarray(es.hist_start[:n]),
                                       jnp.asarray(es.hist_len[:n]), ds.max_history, V)
    batch = dict(history=jnp.asarray(es.history[:n]), candidates=jnp.asarray(es.candidates[:n]),
                 banned=banned, banned_sampled=banned, users=jnp.asarray(es.users[:n], jnp.int32))
    m0 = methods.build(c, ds)
    abstract = jax.eval_shape(m0.init_state, jax.random.PRNGKey(0))['params']
    params = checkpoint.restore_params_only(str(tiny_run), abstract)
    lists = {}
    for s in STRATEGIES:
        cs = gpt_config.get_config('tiny')
        cs.decode.strategy = s
        cs.decode.num_sequences = 8
        m = methods.build(cs, ds)
        sampled, full = jax.jit(m.generate_fn())(params, batch, jax.random.PRNGKey(1))
        sampled, full = np.asarray(sampled), np.asarray(full)
        lists[s] = full
        for out in (sampled, full):
            assert out.shape == (n, K) and (out > 0).all(), s
            assert all(len(set(r)) == K for r in out), f'{s}: an item twice in a list'
            assert not np.asarray(banned)[np.arange(n)[:, None], out].any(), f'{s}: history item'
        assert all(set(r) <= set(cand) for r, cand in zip(sampled, es.candidates[:n])), s
    np.testing.assert_array_equal(lists['greedy'][:, 0], lists['topk'][:, 0])
    assert (lists['greedy'] != lists['topk']).any()      # generation is not the top-K list

