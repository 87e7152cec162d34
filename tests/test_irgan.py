"""IRGAN (methods/irgan.py): the policy gradient of a two-item toy and the discriminator's loss by
hand; a generator update raises the probability of the item the discriminator rewards; every
draw is reproducible from its key and follows its distribution; the pretraining is BPR's run and
both players start from its parameters at the switch; a tiny run through main.py goes through
both phases and writes test.json."""
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

import data_prep
from aos4rec_jax import checkpoint as ckpt_lib
from aos4rec_jax import data as data_lib
from aos4rec_jax.methods import bpr as bpr_method
from aos4rec_jax.methods import irgan
from aos4rec_jax.methods.base import PhaseContext
from aos4rec_jax.models.bpr import BPRMF, BPRMFConfig
from experiments.configs import bpr as bpr_config
from experiments.configs import irgan as irgan_config
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JIT = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})


def _mf(num_items, num_users, dim, users, items, bias):
    """A models/bpr.py network and its parameters with the given factors (rows 1..N of items)."""
    net = BPRMF(BPRMFConfig(num_items=num_items, num_users=num_users, embed_dim=dim))
    p = net.init({'params': jax.random.PRNGKey(0)}, jnp.zeros((1, 2), jnp.int32),
                 jnp.zeros((1,), jnp.int32))['params']
    table = np.zeros(p['item_embed']['embedding'].shape, np.float32)
    table[1:num_items + 1] = items
    b = np.zeros(p['output_item_bias'].shape, np.float32)
    b[1:num_items + 1] = bias
    return net, {'item_embed': {'embedding': jnp.asarray(table)},
                 'user_embed': jnp.asarray(np.asarray(users, np.float32)),
                 'output_item_bias': jnp.asarray(b)}


# ------------------------------------------------------------------------------ by hand
def test_policy_gradient_of_a_two_item_toy_equals_the_hand_computed_gradient():
    # one user (w = 0.5), items 1 and 2 (h = 1, -2; b = 0.3, -0.1): z = (0.8, -1.1), p = softmax(z)
    w, h, b = 0.5, np.array([1.0, -2.0]), np.array([0.3, -0.1])
    net, params = _mf(2, 1, 1, [[w]], h[:, None], b)
    samples = jnp.array([[1, 2, 1]])
    weights = jnp.array([[0.7, -0.4, 0.2]])          # reward x importance weight of each draw
    loss_fn = lambda p: irgan.g_loss(net, p, jnp.array([0]), samples, weights)
    loss, grads = JIT(jax.value_and_grad(loss_fn))(params)
    # L = -1/3 sum_s w_s log p(i_s);  dL/dz_j = -1/3 sum_s w_s (1[i_s = j] - p_j)
    z = w * h + b
    p = np.exp(z) / np.exp(z).sum()
    onehot = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    dz = -(np.array([0.7, -0.4, 0.2])[:, None] * (onehot - p[None])).sum(0) / 3
    np.testing.assert_allclose(np.asarray(grads['output_item_bias'][1:3]), dz, atol=1e-6)
    np.testing.assert_allclose(np.asarray(grads['item_embed']['embedding'][1:3, 0]), dz * w, atol=1e-6)
    np.testing.assert_allclose(float(grads['user_embed'][0, 0]), float((dz * h).sum()), atol=1e-6)
    # padding (row 0) and the table's spare rows get nothing
    assert float(grads['output_item_bias'][0]) == 0.0
    assert float(jnp.abs(grads['item_embed']['embedding'][3:]).sum()) == 0.0
    # the loss value itself
    want = -(0.7 * np.log(p[0]) - 0.4 * np.log(p[1]) + 0.2 * np.log(p[0])) / 3
    np.testing.assert_allclose(float(loss), want, atol=1e-6)


def test_rewards_and_importance_mix_by_hand():
    f = jnp.array([0.0, 2.0, -1.0])
    np.testing.assert_allclose(np.asarray(irgan.reward_of(f, 'sigmoid')),
                               [0.0, 2 / (1 + math.exp(-2)) - 1, 2 / (1 + math.exp(1)) - 1], atol=1e-6)
    np.testing.assert_allclose(np.asarray(irgan.reward_of(f, 'log1pexp')),
                               [math.log(2), math.log(1 + math.e ** 2), math.log(1 + math.e ** -1)],
                               atol=1e-6)
    # p_G over items 1..3 = (0.5, 0.25, 0.25); train items (1, 3, 3): p_n = 0.8 p_G + 0.2 (1/3, 0, 2/3)
    logp = jnp.log(jnp.array([[0.0, 0.5, 0.25, 0.25]]))
    pn = irgan.mixture_probs(logp, jnp.array([[1, 3, 3, 0]]), jnp.array([3]), 0.2)
    np.testing.assert_allclose(np.asarray(pn[0]), [0.0, 0.4 + 0.2 / 3, 0.2, 0.2 + 0.4 / 3], atol=1e-6)
    np.testing.assert_allclose(np.asarray(irgan.mixture_probs(logp, jnp.array([[1, 3, 3, 0]]),
                                                              jnp.array([3]), 0.0)),
                               np.exp(np.asarray(logp)), atol=1e-7)


def test_discriminator_loss_on_hand_computed_values():
    # two users, three items, d = 2
    users = np.array([[1.0, 0.0], [0.5, -1.0]])
    items = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 1.0]])
    bias = np.array([0.1, -0.2, 0.0])
    net, params = _mf(3, 2, 2, users, items, bias)
    u = jnp.array([0, 1])
    pairs = jnp.array([[1, 3], [2, 2]])              # (positive, G's item) a row
    logits, l2 = JIT(functools.partial(irgan.pair_logits, net))(params, u, pairs)
    f = np.array([[users[0] @ items[0] + bias[0], users[0] @ items[2] + bias[2]],
                  [users[1] @ items[1] + bias[1], users[1] @ items[1] + bias[1]]])
    np.testing.assert_allclose(np.asarray(logits), f, atol=1e-6)
    reg = 0.5 * np.array([[users[0] @ users[0] + items[0] @ items[0] + bias[0] ** 2,
                           users[0] @ users[0] + items[2] @ items[2] + bias[2] ** 2],
                          [users[1] @ users[1] + items[1] @ items[1] + bias[1] ** 2] * 2])
    np.testing.assert_allclose(np.asarray(l2), reg, atol=1e-6)
    sp = lambda x: math.log1p(math.exp(x))
    ce = (sp(-f[0, 0]) + sp(-f[1, 0]) + sp(f[0, 1]) + sp(f[1, 1])) / 4
    for d_reg in (0.0, 0.2):
        got = irgan.d_loss(logits[:, 0], logits[:, 1], l2[:, 0], l2[:, 1], d_reg)
        np.testing.assert_allclose(float(got), ce + d_reg * reg.mean(), atol=1e-6)
    # the gradient lowers the loss by raising the positives' logits and lowering G's items'
    g = jax.grad(lambda x: irgan.d_loss(x[:, 0], x[:, 1], l2[:, 0], l2[:, 1], 0.2))(logits)
    assert bool(jnp.all(g[:, 0] < 0)) and bool(jnp.all(g[:, 1] > 0))


# ------------------------------------------------------------------------------ the method
def _prepared():
    return helpers.tiny_prepared([list(range(1 + u % 6, 11 + u % 6)) for u in range(24)],
                                 cap=1, k=5, history_len=6, target_len=1, num_candidates=8)


def _method(cls=irgan.IRGAN, config=irgan_config, **opts):
    ds = data_lib.Dataset(_prepared())
    c = config.get_config('tiny')
    c.batch_size = 8
    c.model_kwargs.embed_dim = 8
    block = c[c.model]
    for k, v in opts.items():
        block[k] = v
    return cls(c, ds), ds


def test_a_generator_update_raises_the_probability_of_the_item_the_discriminator_rewards():
    m, ds = _method(optimizer='sgd', g_learning_rate=0.5, g_samples=64)
    data = ds.device_data()
    state = JIT(m.init_state)(jax.random.PRNGKey(0))
    # D: every user's logit is +4 on item X, -4 elsewhere (user factors 0, item bias +-4)
    X = 7
    d = state['params']['discriminator']
    bias = jnp.full(d['output_item_bias'].shape, -4.0).at[X].set(4.0)
    d = dict(d, user_embed=jnp.zeros_like(d['user_embed']), output_item_bias=bias)
    state = dict(state, params=dict(state['params'], discriminator=d))
    users = jnp.arange(ds.info.num_users)

    def p_x(s):
        return jax.nn.softmax(irgan.item_logits(m.model, s['params']['generator'], users))[:, X]
    before = p_x(state)
    step = JIT(m.g_update)
    for i in range(3):
        state, metrics = step(state, data, jax.random.PRNGKey(10 + i))
    after = p_x(state)
    # every user's p_G(X) rises (the drawn users directly; the others through X's item factors)
    assert float(jnp.mean(after)) > 1.15 * float(jnp.mean(before)), (before, after)
    assert bool(jnp.all(after > before)), (before, after)
    assert np.isfinite(float(metrics['g_loss'])) and abs(float(metrics['is_weight']) - 1) < 0.5


def test_every_draw_is_reproducible_from_its_key_and_follows_its_distribution():
    logits = jnp.log(jnp.array([[0.0, 0.1, 0.6, 0.3], [0.0, 0.5, 0.0, 0.5]])).at[:, 0].set(-1e30)
    draw = JIT(irgan.sample_items, static_argnums=2)
    a = draw(jax.random.PRNGKey(3), logits, 20000)
    b = draw(jax.random.PRNGKey(3), logits, 20000)
    c = draw(jax.random.PRNGKey(4), logits, 20000)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    a = np.asarray(a)
    assert a.min() >= 1 and not (a[1] == 2).any()            # weight 0: never drawn
    np.testing.assert_allclose(np.bincount(a[0], minlength=4)[1:] / a.shape[1], [0.1, 0.6, 0.3],
                               atol=0.015)
    np.testing.assert_allclose(np.bincount(a[1], minlength=4)[1:] / a.shape[1], [0.5, 0.0, 0.5],
                               atol=0.015)
    # the method's batches: the same key, the same draws
    m, ds = _method()
    data = ds.device_data()
    state = JIT(m.init_state)(jax.random.PRNGKey(0))
    g_batch = JIT(m.g_batch)
    g1 = g_batch(state, data, jax.random.PRNGKey(5))
    g2 = g_batch(state, data, jax.random.PRNGKey(5))
    g3 = g_batch(state, data, jax.random.PRNGKey(6))
    for x, y in zip(g1, g2):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(g1[1]), np.asarray(g3[1]))
    assert int(jnp.min(g1[1])) >= 1                          # padding is never drawn
    gan_round = JIT(m.gan_round)
    r1, r2 = gan_round(state, data), gan_round(state, data)
    for x, y in zip(jax.tree_util.tree_leaves(r1), jax.tree_util.tree_leaves(r2)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


class _Checkpointer:
    def __init__(self, best=None, step=None):
        self.best, self.step = best, step

    def best_step(self):
        return self.step

    def restore_best(self, abstract):
        return self.best, {}


def _ctx(state, ck, step):
    sh = jax.tree_util.tree_map(lambda x: x.sharding, state)
    return PhaseContext(checkpointer=ck, abstract={'params': None}, shardings=sh, meta={}, step=step,
                        log=lambda s: None)


def test_pretraining_is_bprs_run_and_both_players_start_from_its_parameters_at_the_switch():
    m, ds = _method()
    b, _ = _method(bpr_method.BPR, bpr_config)
    data = ds.device_data()
    state = JIT(m.init_state)(jax.random.PRNGKey(0))
    ref = JIT(b.init_state)(jax.random.PRNGKey(0))
    step, bstep = JIT(m.pretrain_step), JIT(b.train_step)
    kept = None
    for i in range(4):
        state, _ = step(state, data)
        ref, _ = bstep(ref, data)
        if i == 1:
            kept = jax.tree_util.tree_map(np.asarray, ref['params'])
    leaves = lambda t: [np.asarray(x) for x in jax.tree_util.tree_leaves(t)]
    for who in ('generator', 'discriminator'):      # D mirrors G through the pretraining
        for x, y in zip(leaves(state['params'][who]), leaves(ref['params'])):
            np.testing.assert_array_equal(x, y)
    # switch with start_from 'last': both are the last BPR parameters, fresh optimizers
    moved = dict(state, params=dict(state['params'], discriminator=jax.tree_util.tree_map(
        lambda x: x + 1.0, state['params']['discriminator'])))
    new, meta = m._enter_gan(moved, _ctx(state, _Checkpointer(), 4))
    for who in ('generator', 'discriminator'):
        for x, y in zip(leaves(new['params'][who]), leaves(ref['params'])):
            np.testing.assert_array_equal(x, y)
    for x, y in zip(leaves(new['g_opt_state']), leaves(m.g_tx.init(ref['params']))):
        np.testing.assert_array_equal(x, y)
    assert meta['best_step'] == -1 and meta['best_score'] == -math.inf and 'irgan_from' in meta
    # start_from 'best': both are the kept (best validation) parameters
    best = {'generator': kept, 'discriminator': jax.tree_util.tree_map(lambda x: x * 0, kept)}
    new, meta = m._enter_gan(state, _ctx(state, _Checkpointer(best, 2), 4))
    for who in ('generator', 'discriminator'):
        for x, y in zip(leaves(new['params'][who]), leaves(kept)):
            np.testing.assert_array_equal(x, y)
    assert 'step 2' in meta['irgan_from']
    # the K-list reads the chosen player
    h = jnp.zeros((2, ds.info.history_len), jnp.int32)
    u = jnp.array([0, 1])
    two = {'generator': kept, 'discriminator': jax.tree_util.tree_map(lambda x: -x, kept)}
    d, _ = _method(evaluate='discriminator')
    np.testing.assert_allclose(np.asarray(m.scores(two, h, u)), np.asarray(b.scores(kept, h, u)))
    np.testing.assert_allclose(np.asarray(d.scores(two, h, u)),
                               np.asarray(b.scores(two['discriminator'], h, u)))


def test_bad_options_are_refused_by_name():
    from aos4rec_jax import config as config_lib
    for field, value in (('gan_steps', -1), ('d_temperature', 0.0), ('sample_lambda', 1.0),
                         ('reward', 'x'), ('evaluate', 'both'), ('optimizer', 'rmsprop'),
                         ('g_samples', 0), ('d_reg', -1.0), ('start_from', 'first')):
        c = irgan_config.get_config('tiny')
        c.irgan[field] = value
        with pytest.raises(config_lib.ConfigError, match=f'irgan.{field}'):
            config_lib.validate(c)


# ------------------------------------------------------------------------------ through main.py
def test_tiny_run_through_main_goes_through_both_phases_and_writes_test_json(tmp_path):
    data_prep.write_dataset(_prepared(), tmp_path / 'data')
    work = tmp_path / 'run'
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    args = ['--config=experiments/configs/irgan.py:tiny', f'--config.data_dir={tmp_path / "data"}',
            '--config.train_steps=20', '--config.irgan.gan_steps=10', '--config.batch_size=8',
            '--config.model_kwargs.embed_dim=8', '--config.log_every=5', '--config.eval_every=10',
            '--config.checkpoint_every=10', '--config.keep_checkpoints=5', f'--workdir={work}']
    out = subprocess.run([sys.executable, 'main.py', *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    recs = [json.loads(l) for l in open(work / 'metrics' / 'train.jsonl')]
    assert [(r['step'], r['phase']) for r in recs] == (
        [(s, 'pretrain') for s in (5, 10, 15, 20)] + [(25, 'gan'), (30, 'gan')])
    for r in recs[4:]:
        assert all(math.isfinite(r[k]) for k in ('g_loss', 'reward', 'd_loss', 'd_acc', 'is_weight'))
    assert 'IRGAN: generator and discriminator set to the BPR parameters of this run, step' in out.stdout
    valid = [json.loads(l) for l in open(work / 'metrics' / 'valid_history.jsonl')]
    # (20, 'gan'): the players that start the game, validated on entry (irgan.start_competes,
    # on in the experiments config)
    assert [(v['step'], v['phase']) for v in valid] == [(10, 'pretrain'), (20, 'pretrain'),
                                                         (20, 'gan'), (30, 'gan')]
    assert [v.get('at_entry', False) for v in valid] == [False, False, True, False]
    test = json.load(open(work / 'metrics' / 'test.json'))
    assert 0.0 <= test['full']['ndcg@5'] <= 1.0 and 0.0 <= test['sampled']['hr@5'] <= 1.0
    assert test['decode']['strategy'] == 'topk'
    # the checkpoint written right after the switch: G = D; at the end the game has moved them
    ck = ckpt_lib.Checkpointer(str(work))
    try:
        at_switch, _ = ck.restore(20, None)
        last, _ = ck.restore(30, None)
    finally:
        ck.close()
    for x, y in zip(jax.tree_util.tree_leaves(at_switch['params']['generator']),
                    jax.tree_util.tree_leaves(at_switch['params']['discriminator'])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(
        jax.tree_util.tree_leaves(last['params']['generator']),
        jax.tree_util.tree_leaves(last['params']['discriminator'])))
