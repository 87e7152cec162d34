"""CRR-Transformer (methods/crr.py): the TD target, the advantage and CRR's weights, the soft
update and the direction of the policy update on hand-made values; one stage-2 step of the
method moves the target critic by exactly tau; a tiny run through main.py goes through both
stages and writes test.json, and a run killed in stage 2 resumes to the same end."""
import functools
import json
import math
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aos4rec_jax import checkpoint as ckpt_lib
from aos4rec_jax import data as data_lib
from aos4rec_jax.methods import crr
from experiments.configs import crr as crr_config
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------ hand-made values
def test_td_target_equals_the_hand_computed_value():
    # pi(. | s') over items 1, 2 (index 0 is padding: never an action, whatever its logit):
    # softmax(0, log 3) = (1/4, 3/4); Q'(s', .) = (2, 4) -> E Q' = 0.5 + 3 = 3.5
    next_logits = jnp.array([[99.0, 0.0, math.log(3.0)]] * 3)
    next_q = jnp.array([[50.0, 2.0, 4.0]] * 3)
    reward = jnp.array([1.0, 1.0, 0.0])
    done = jnp.array([0.0, 1.0, 0.0])
    y = crr.td_target(reward, done, next_q, next_logits, 0.6)
    np.testing.assert_allclose(np.asarray(y), [1 + 0.6 * 3.5, 1.0, 0.6 * 3.5], rtol=1e-6)
    # the YOOCHOOSE discount
    np.testing.assert_allclose(float(crr.td_target(1.0, 0.0, next_q[0], next_logits[0], 0.9)),
                               1 + 0.9 * 3.5, rtol=1e-6)
    assert crr.discount_for(-1.0, 'yoochoose') == 0.9
    assert crr.discount_for(-1.0, 'movielens') == 0.6
    assert crr.discount_for(0.3, 'yoochoose') == 0.3


def test_advantage_and_crr_weights_equal_the_hand_computed_values():
    q_sa = jnp.array([2.0, 0.5, 30.0])
    q_sampled = jnp.array([[1.0, 1.0, 0.0],      # m = 4 sampled actions' Q, one row per sample
                           [1.0, 1.0, 0.0],
                           [2.0, 1.0, 0.0],
                           [0.0, 1.0, 0.0]])
    adv = crr.advantage(q_sa, q_sampled)
    np.testing.assert_allclose(np.asarray(adv), [1.0, -0.5, 30.0], rtol=1e-6)
    w = crr.crr_weights(adv, 1.0, 20.0)
    np.testing.assert_allclose(np.asarray(w), [math.e, math.exp(-0.5), 20.0], rtol=1e-6)
    w2 = crr.crr_weights(adv, 2.0, 20.0)             # beta = 2: exp(A / 2)
    np.testing.assert_allclose(np.asarray(w2), [math.exp(0.5), math.exp(-0.25), 20.0], rtol=1e-6)
    assert np.isfinite(np.asarray(crr.crr_weights(jnp.array([1e6]), 1.0, 20.0))).all()


def test_policy_loss_is_the_weighted_negative_log_likelihood():
    logits = jnp.array([[7.0, 0.0, math.log(3.0)], [7.0, 0.0, math.log(3.0)]])
    s, n = crr.policy_loss(logits, jnp.array([2, 1]), jnp.array([2.0, 5.0]),
                           jnp.array([True, False]))
    np.testing.assert_allclose(float(s), -2.0 * math.log(0.75), rtol=1e-6)
    assert float(n) == 1.0


def test_soft_update_moves_the_target_by_exactly_tau():
    target = {'a': jnp.zeros((3,)), 'b': {'c': jnp.full((2,), 2.0)}}
    online = {'a': jnp.ones((3,)), 'b': {'c': jnp.full((2,), 6.0)}}
    new = crr.soft_update(target, online, 0.25)
    np.testing.assert_array_equal(np.asarray(new['a']), [0.25] * 3)
    np.testing.assert_array_equal(np.asarray(new['b']['c']), [3.0, 3.0])


def _policy_step(sign):
    """One gradient step of a one-state policy (logits theta over items 1..4) on two logged
    transitions from that state, actions 1 (Q = 2) and 2 (Q = 0); the baseline from m = 4 sampled
    actions of Q 1. `sign` -1 flips the advantage (what a wrong sign in the method would do)."""
    theta = jnp.zeros((5,))
    q_row = jnp.array([0.0, 2.0, 0.0, 1.0, 1.0])
    actions = jnp.array([1, 2])
    sampled = jnp.array([[3, 4], [4, 3], [3, 3], [4, 4]])     # [m, transitions]
    q_sa = q_row[actions]
    adv = sign * crr.advantage(q_sa, q_row[sampled])
    w = crr.crr_weights(adv, 1.0, 20.0)

    def loss(th):
        s, n = crr.policy_loss(jnp.stack([th, th]), actions, w, jnp.array([True, True]))
        return s / n
    new = theta - 0.5 * jax.grad(loss)(theta)
    p = jax.nn.softmax(new[1:])
    return float(p[0]), float(p[1])        # pi(1), pi(2)


def test_the_policy_moves_toward_the_higher_q_action_and_a_flipped_advantage_would_not():
    p_high, p_low = _policy_step(+1)
    assert p_high > p_low + 0.05, (p_high, p_low)
    # the same step with the advantage's sign flipped favours the lower-Q action: a method with
    # that sign fails the assertion above
    f_high, f_low = _policy_step(-1)
    assert f_high < f_low


# ------------------------------------------------------------------------------ one method step
def _method(tmp_path, **opts):
    prepared = helpers.tiny_prepared([list(range(1 + u % 5, 13 + u % 5)) for u in range(16)])
    ds = data_lib.Dataset(prepared)
    c = crr_config.get_config('tiny')
    c.batch_size = 8
    c.model_kwargs.embed_dim = 16
    c.model_kwargs.mlp_dim = 16
    c.crr.train_len = 6
    for k, v in opts.items():
        c.crr[k] = v
    return crr.CRR(c, ds), ds


@pytest.mark.slow
def test_a_crr_step_moves_the_target_by_tau_and_reports_the_td_target(tmp_path):
    m, ds = _method(tmp_path, tau=0.125)
    jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})
    state = jit(m.init_state)(jax.random.PRNGKey(0))
    # make the critic differ from its target (as after some steps)
    state['critic'] = jax.tree_util.tree_map(lambda x: x + 0.01, state['critic'])
    data = ds.device_data()
    new, metrics = jit(m.crr_step)(state, data)
    for t0, c1, t1 in zip(jax.tree_util.tree_leaves(state['critic_target']),
                          jax.tree_util.tree_leaves(new['critic']),
                          jax.tree_util.tree_leaves(new['critic_target'])):
        np.testing.assert_allclose(np.asarray(t1 - t0), 0.125 * np.asarray(c1 - t0),
                                   rtol=1e-5, atol=1e-7)
    assert int(new['step']) == int(state['step']) + 1
    # the reported TD target: rewards of 1 and one terminal transition a row
    @jit
    def reference(state, data):
        key = jax.random.split(jax.random.fold_in(state['rng'], state['step']), 4)[0]
        users, seq, actions, reward, done, mask = m.transitions(data, key)
        logits = m.policy_logits(state['params'], seq, users)
        q_next = m.q_values(state['critic_target'], seq)[:, 1:]
        y = crr.td_target(reward, done, q_next, logits[:, 1:], m.gamma)
        return jnp.sum(y * mask) / jnp.sum(mask), done
    want, done = reference(state, data)
    np.testing.assert_allclose(float(metrics['td_target']), float(want), rtol=1e-4)
    assert m.gamma == 0.6 and bool(jnp.all(done[:, -1] == 1.0)) and bool(jnp.all(done[:, :-1] == 0))
    for k in ('critic_loss', 'q_data', 'adv_std', 'weight_mean', 'clip_frac', 'nll'):
        assert math.isfinite(float(metrics[k])), k


def test_bad_options_are_refused_by_name():
    from aos4rec_jax import config as config_lib
    for field, value in (('beta', 0.0), ('tau', 1.5), ('num_samples', 0), ('gamma', 1.0),
                         ('critic_init', 'x'), ('weight_clip', -1.0),
                         ('init_from', '/a/run')):        # init_from needs train_steps = 0
        c = crr_config.get_config('tiny')
        c.crr[field] = value
        with pytest.raises(config_lib.ConfigError, match=f'crr.{field}'):
            crr.CRR.validate_config(c)


# ------------------------------------------------------------------------------ through main.py
# 30 pretraining + 20 CRR steps; checkpoints every 10; the killed run is stopped once step 40's
# checkpoint (inside stage 2) is written, and its rerun resumes there
ARGS = ['--config=experiments/configs/crr.py:tiny', '--config.train_steps=30',
        '--config.crr.crr_steps=20', '--config.crr.train_len=12', '--config.history_len=10',
        '--config.log_every=5', '--config.eval_every=10', '--config.checkpoint_every=10',
        '--config.max_eval_users=48']


def _env(tmp):
    return dict(os.environ, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=str(tmp / 'jit_cache'),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')


def _cmd(tmp, workdir):
    return [sys.executable, 'main.py', *ARGS, f'--config.synthetic.cache_dir={tmp / "data"}',
            f'--workdir={workdir}']


def _finalized(workdir):
    d = os.path.join(workdir, 'checkpoints')
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """An uninterrupted run; a run SIGKILLed in stage 2 after its step-40 checkpoint; its rerun."""
    tmp = tmp_path_factory.mktemp('crr')
    env = _env(tmp)
    full = subprocess.run(_cmd(tmp, tmp / 'full'), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]
    killed = tmp / 'killed'
    p = subprocess.Popen(_cmd(tmp, killed), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    try:
        for line in p.stdout:
            if '[crr] step 45/50' in line:
                break
        while p.poll() is None and 40 not in _finalized(killed) and time.time() - t0 < 600:
            time.sleep(0.002)
        p.send_signal(signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == -signal.SIGKILL, 'the run ended before it was killed'
    assert 40 in _finalized(killed)
    again = subprocess.run(_cmd(tmp, killed), cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    return tmp, full.stdout, again.stdout


@pytest.mark.slow
def test_tiny_run_through_main_goes_through_both_stages_and_writes_test_json(runs):
    tmp, out, _ = runs
    recs = [json.loads(l) for l in open(tmp / 'full' / 'metrics' / 'train.jsonl')]
    phases = [r['phase'] for r in recs]
    assert phases == ['pretrain'] * 6 + ['crr'] * 4, phases
    crr_recs = [r for r in recs if r['phase'] == 'crr']
    for r in crr_recs:
        assert all(math.isfinite(r[k]) for k in ('loss', 'critic_loss', 'q_data', 'weight_mean'))
    # the critic learns: Q of the logged actions rises from 0 toward r / (1 - gamma)
    assert crr_recs[-1]['q_data'] > crr_recs[0]['q_data']
    assert 'CRR phase: policy from this run, step' in out
    test = json.load(open(tmp / 'full' / 'metrics' / 'test.json'))
    assert 0.0 <= test['full']['ndcg@10'] <= 1.0
    assert test['decode']['strategy'] == 'topk'


@pytest.mark.slow
def test_a_run_killed_in_stage_2_resumes_to_the_same_end(runs):
    tmp, _, again = runs
    assert 'resumed from checkpoint step 40' in again, again[-2000:]
    assert 'CRR phase:' not in again              # the stage-2 entry is not run twice

    def final(d):
        ck = ckpt_lib.Checkpointer(str(d))
        state, _ = ck.restore(ck.latest_step(), None)
        ck.close()
        return state
    a, b = final(tmp / 'full'), final(tmp / 'killed')
    assert int(a['step']) == 50 and set(a) >= {'critic', 'critic_target', 'critic_opt_state'}
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    ta = json.load(open(tmp / 'full' / 'metrics' / 'test.json'))
    tb = json.load(open(tmp / 'killed' / 'metrics' / 'test.json'))
    assert ta == tb
