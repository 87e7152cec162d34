"""optim.make_optimizer / learning_rate_schedule against values computed by hand: the warm-up and
decay rates, clipping, Adam's eps, and which parameters AdamW decays."""
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aos4rec_jax import optim


def _config(**over):
    c = dict(learning_rate=0.1, warmup_steps=0, grad_clip=0.0, weight_decay=0.0)
    c.update(over)
    return SimpleNamespace(**c)


def _rates(sched, n):
    return [float(sched(t)) for t in range(n)]


def test_schedule_by_hand():
    # 4 warm-up steps: lr / 4 + (lr - lr / 4) * t / 4, then lr
    np.testing.assert_allclose(_rates(optim.learning_rate_schedule(0.1, 4), 7),
                               [0.025, 0.04375, 0.0625, 0.08125, 0.1, 0.1, 0.1], rtol=1e-6)
    # then linear decay to 0 at step 8, 0 after
    np.testing.assert_allclose(_rates(optim.learning_rate_schedule(0.1, 4, 8), 10),
                               [0.025, 0.04375, 0.0625, 0.08125, 0.1, 0.075, 0.05, 0.025, 0, 0],
                               rtol=1e-6, atol=1e-9)
    # no warm-up: lr from the first step (one warm-up step of lr / 1)
    np.testing.assert_allclose(_rates(optim.learning_rate_schedule(0.1, 0), 3), [0.1] * 3,
                               rtol=1e-6)
    # a decay end before the warm-up's end: 0 one step after the warm-up
    np.testing.assert_allclose(_rates(optim.learning_rate_schedule(0.1, 2, 1), 4),
                               [0.05, 0.075, 0.1, 0.0], rtol=1e-6, atol=1e-9)


RTOL = 2e-5


def _first_update(tx, g):
    params = {'w': jnp.zeros_like(g)}
    updates, _ = tx.update({'w': g}, tx.init(params), params)
    return np.asarray(updates['w'])


def test_clipping_eps_and_constant_rate_by_hand():
    """Adam's first step is -lr * g / (|g| + eps) (bias-corrected moments g and g^2); eps 1 makes
    eps show; clipping at 1 scales g = (3, 4), norm 5, to (0.6, 0.8)."""
    g = jnp.array([3.0, 4.0])
    # float32 moments: (1 - b2) g^2 / (1 - b2) is g^2 to a few ulps (seen 5e-6 relative); a wrong
    # eps, clip or rate is off by 7% or more here
    np.testing.assert_allclose(_first_update(optim.make_optimizer(_config(), eps=1.0), g),
                               [-0.1 * 3 / 4, -0.1 * 4 / 5], rtol=RTOL)
    np.testing.assert_allclose(
        _first_update(optim.make_optimizer(_config(grad_clip=1.0), eps=1.0), g),
        [-0.1 * 0.6 / 1.6, -0.1 * 0.8 / 1.8], rtol=RTOL)
    # a clip above the norm leaves g alone
    np.testing.assert_allclose(
        _first_update(optim.make_optimizer(_config(grad_clip=10.0), eps=1.0), g),
        [-0.1 * 3 / 4, -0.1 * 4 / 5], rtol=RTOL)
    # a constant rate: 0.2 at the first step although the warm-up would start at 0.1 / 10
    np.testing.assert_allclose(
        _first_update(optim.make_optimizer(_config(warmup_steps=10), 0.2, eps=1.0), g),
        [-0.2 * 3 / 4, -0.2 * 4 / 5], rtol=RTOL)
    # default eps 1e-8: the step is -lr * sign(g) to float32 precision
    np.testing.assert_allclose(_first_update(optim.make_optimizer(_config()), g), [-0.1, -0.1],
                               rtol=RTOL)
    with pytest.raises(ValueError):
        optim.make_optimizer(_config(), 0.2, decay_steps=5)


PARAMS = {'dense': {'kernel': jnp.ones((2,)), 'bias': jnp.ones((2,))},
          'ln': {'scale': jnp.ones((2,)), 'bias': jnp.ones((2,))},
          'item_embed': {'embedding': jnp.ones((2,))}}


def _moved_after_zero_gradient(tx, steps=2):
    """Each parameter's 1 - w after `steps` updates by a zero gradient: only weight decay moves it
    (Adam's step is 0 for a zero gradient)."""
    params, state = PARAMS, tx.init(PARAMS)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    for _ in range(steps):
        updates, state = tx.update(zeros, state, params)
        params = optax.apply_updates(params, updates)
    return {'/'.join(k.key for k in path): float(1 - v[0])
            for path, v in jax.tree_util.tree_leaves_with_path(params)}, state


def _has_mask_state(state):
    return any(isinstance(x, optax.MaskedState) for x in jax.tree_util.tree_leaves(
        state, is_leaf=lambda x: isinstance(x, optax.MaskedState)))


def test_which_parameters_decay():
    names = ['dense/kernel', 'dense/bias', 'ln/scale', 'ln/bias', 'item_embed/embedding']
    # no weight decay: plain Adam, nothing moves
    moved, state = _moved_after_zero_gradient(optim.make_optimizer(_config()))
    assert moved == dict.fromkeys(names, 0.0) and not _has_mask_state(state)
    # weight decay 0.5 on every parameter: w <- w (1 - lr 0.5) each step, twice
    moved, _ = _moved_after_zero_gradient(optim.make_optimizer(_config(weight_decay=0.5)))
    np.testing.assert_allclose([moved[n] for n in names], [1 - 0.95 ** 2] * 5, rtol=1e-6)
    # with a predicate: only kernels and embeddings
    decays = lambda path: path[-1].key in ('kernel', 'embedding')
    moved, state = _moved_after_zero_gradient(
        optim.make_optimizer(_config(weight_decay=0.5), decays=decays))
    np.testing.assert_allclose([moved[n] for n in names],
                               [1 - 0.95 ** 2, 0, 0, 0, 1 - 0.95 ** 2], rtol=1e-6)
    assert _has_mask_state(state)
    # a predicate at weight decay 0: AdamW's masked state (the layout a run's checkpoints hold),
    # nothing moves
    moved, state = _moved_after_zero_gradient(optim.make_optimizer(_config(), decays=decays))
    assert moved == dict.fromkeys(names, 0.0) and _has_mask_state(state)
