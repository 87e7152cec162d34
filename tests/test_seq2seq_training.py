"""MLE training of the seq2seq models: end to end, kill-and-resume, 8 devices vs 1."""
import json
import os
import sys

import jax
import numpy as np
import optax
import pytest

from aos4rec_jax import checkpoint as ckpt_lib
from aos4rec_jax import datasets
from aos4rec_jax import optim
from aos4rec_jax import seq2seq
from aos4rec_jax import sharding as shard_lib
from aos4rec_jax import trainer
from experiments.configs import gru as gru_cfg
from experiments.configs import transformer as tf_cfg
from tests.helpers import run_full_then_killed_and_resumed
from tests.test_trainer import ROOT, assert_predictions_agree, read_json

CONFIGS = {'transformer': tf_cfg, 'gru': gru_cfg}


@pytest.mark.parametrize('name', ['transformer', 'gru'])
def test_tiny_run_end_to_end(tmp_path, name):
    c = CONFIGS[name].get_config('tiny')
    trainer.train_and_evaluate(c, str(tmp_path))
    for f in ('metrics/train.jsonl', 'metrics/valid_history.jsonl', 'metrics/test.json',
              'predictions/test.parquet', 'plots/training.png', 'best', 'checkpoints'):
        assert (tmp_path / f).exists(), f
    lines = [json.loads(l) for l in open(tmp_path / 'metrics' / 'train.jsonl')]
    assert [l['step'] for l in lines] == list(range(10, 61, 10))
    assert all(np.isfinite(l['loss']) for l in lines)
    assert lines[-1]['loss'] < lines[0]['loss']
    assert_predictions_agree(str(tmp_path))


def _final_params(workdir):
    """(step, params) of the latest periodic checkpoint of a run."""
    ck = ckpt_lib.Checkpointer(workdir)
    try:
        step = ck.latest_step()
        r = ck.state_mgr.restore(step, args=ckpt_lib.ocp.args.Composite(
            state=ckpt_lib.ocp.args.StandardRestore(), meta=ckpt_lib.ocp.args.JsonRestore()))
    finally:
        ck.close()
    return step, r['state']['params']


@pytest.mark.slow
def test_sigkill_and_resume_equals_uninterrupted(tmp_path):
    """A run killed with SIGKILL mid-training and started again ends where an uninterrupted run ends."""
    args = ['--config=experiments/configs/transformer.py:tiny', '--config.train_steps=80',
            '--config.checkpoint_every=10', '--config.log_every=5', '--config.eval_every=40',
            f'--config.synthetic.cache_dir={tmp_path / "data"}']
    # the three processes share one compilation cache (the second and third load the programs the
    # first compiled; the kill comes long after every program is compiled and written)
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1',
               JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'jax_cache'))
    killed = tmp_path / 'killed'
    # killed between checkpoints 50 and 60, after a validation
    run_full_then_killed_and_resumed([sys.executable, os.path.join(ROOT, 'main.py')] + args, env,
                                     str(tmp_path / 'full'), str(killed), 'step 55/80', ROOT)

    s1, p1 = _final_params(str(tmp_path / 'full'))
    s2, p2 = _final_params(str(killed))
    assert s1 == s2 == 80
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert read_json(tmp_path / 'full' / 'metrics' / 'test.json') == read_json(killed / 'metrics' / 'test.json')
    steps = [json.loads(l)['step'] for l in open(killed / 'metrics' / 'train.jsonl')]
    assert steps == list(range(5, 81, 5))     # no duplicated or missing lines after the resume


def adam_step_bound(t, b1=0.9, b2=0.999):
    """The largest |m_hat / sqrt(v_hat)| Adam's step t (1, 2, ...) can take, over all gradient
    sequences: m_hat = sum_i w_i g_i, v_hat = sum_i u_i g_i^2 with the bias-corrected weights
    below, and by Cauchy-Schwarz |m_hat| <= sqrt(sum_i w_i^2 / u_i) sqrt(v_hat). (1 at t = 1,
    1.0013 at t = 2: slightly above 1 when the gradient changes.)"""
    i = np.arange(1, t + 1)
    w = (1 - b1) * b1 ** (t - i) / (1 - b1 ** t)
    u = (1 - b2) * b2 ** (t - i) / (1 - b2 ** t)
    return float(np.sqrt(np.sum(w ** 2 / u)))


def key_bias_mask(params):
    """True on the elements whose true gradient is 0, so that what they get is rounding noise:
    the key-projection biases of every attention (a bias added to every key adds the same q.b to
    all the logits of a query, which the softmax cancels). Layouts: 'qkv'/'self_qkv' bias
    [3 (q, k, v), heads, head_dim], 'cross_kv' bias [2 (k, v), heads, head_dim]."""
    def mask(path, x):
        name, m = jax.tree_util.keystr(path), np.zeros(np.shape(x), bool)
        if name.endswith("['bias']") and 'qkv' in name:
            m[1] = True
        elif name.endswith("['bias']") and 'cross_kv' in name:
            m[0] = True
        return m
    return np.concatenate([np.ravel(m) for m in jax.tree_util.tree_leaves(
        jax.tree_util.tree_map_with_path(mask, params))])


@pytest.mark.parametrize('shard_items', [False, True])
def test_eight_devices_equal_one(tmp_path, shard_items):
    """A train step on 8 (fake CPU) devices gives the loss and parameters of 1 device.

    With SGD the parameters must agree to float32 rounding. With the real optimizer (Adam) they
    agree to rounding too except where the gradient is pure rounding noise: Adam divides by
    sqrt(v), so an element whose true gradient is 0 (the attention key biases, key_bias_mask)
    still moves by about lr_t per step, in a direction the summation order decides. So: every
    other element agrees to 1e-6 (seen: 3e-8; one Adam step moves an element by lr_t >= 1e-4, so a
    different update on 8 devices, a skipped one, a different batch cannot hide), and the noise
    elements differ by at most two Adam trajectories: 2 * sum_t lr_t * adam_step_bound(t), with
    lr_t the warm-up schedule computed here (lr / warm + (lr - lr / warm) * t / warm: 0.57 lr over
    the 3 steps).
    """
    assert jax.device_count() == 8
    config = tf_cfg.get_config('tiny')
    config.model_kwargs.dropout_rate = 0.0
    config.mesh.shard_items = shard_items
    ds = datasets.get_dataset(config, str(tmp_path), log=lambda m: None)
    model = seq2seq.build_model(config, ds.info)
    lr, warm = config.learning_rate, config.warmup_steps
    assert config.weight_decay == 0 and warm > 3        # plain Adam, all 3 steps in the warm-up
    max_move = sum((lr / warm + (lr - lr / warm) * t / warm) * adam_step_bound(t + 1)
                   for t in range(3))                   # 5.71e-4 for lr 1e-3, warm-up 10
    for name, tx in (('sgd', optax.sgd(0.5)), ('adam', optim.make_optimizer(config))):
        results = []
        for devices in (jax.devices()[:1], jax.devices()):
            mesh = shard_lib.make_mesh(devices)
            init_fn, abstract, shardings, rng = trainer.create_train_state(config, model, tx, ds.info, mesh)
            repl = shard_lib.replicated(mesh)
            data = ds.device_data(repl)
            step = jax.jit(trainer.make_train_step(model, tx, ds.info, config.batch_size,
                                                   shard_lib.batch_sharding(mesh)),
                           in_shardings=(shardings, repl), out_shardings=(shardings, repl), donate_argnums=0)
            state = init_fn(rng)
            init = jax.device_get(state['params'])
            emb = state['params']['item_embed']['embedding']
            # the comparison is 1 device against 8 (a mesh that ignored its devices: 8 and 8)
            assert len(emb.sharding.device_set) == len(devices)
            if shard_items and len(devices) == 8:
                assert emb.sharding.spec[0] == 'data'
                assert emb.addressable_shards[0].data.shape[0] == emb.shape[0] // 8
            losses = []
            for _ in range(3):
                state, m = step(state, data)
                losses.append(float(m['loss_sum'] / m['tokens']))
            results.append((losses, jax.device_get(state['params'])))
        (l1, p1), (l8, p8) = results
        np.testing.assert_allclose(l1, l8, rtol=1e-5)
        a = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(p1)])
        b = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(p8)])
        a0 = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(init)])
        assert np.mean(np.abs(a - a0) > 1e-5) > 0.5, name        # the steps moved the parameters
        diff = np.abs(a - b)
        if name == 'sgd':
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        else:
            noise = key_bias_mask(p1)
            assert noise.sum() == 3 * config.model_kwargs.num_layers * config.model_kwargs.embed_dim
            # no element moves further than Adam with this schedule can (no warm-up: 3e-3)
            assert np.max(np.abs(a - a0)) <= max_move + 1e-6, 'Adam moved further than it can'
            assert diff[~noise].max() <= 1e-6, (diff[~noise].max(), np.sum(diff[~noise] > 1e-6))
            assert diff[noise].max() <= 2 * max_move + 1e-6, (diff[noise].max(), max_move)
