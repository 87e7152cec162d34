"""The optimizers of all methods: the shared builder (warm-up, optional linear decay, gradient
clipping, Adam or AdamW with an optional weight-decay mask), one update, and the gradient norm
every train step logs."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax


def learning_rate_schedule(learning_rate: float, warmup_steps: int,
                           decay_steps: int | None = None) -> optax.Schedule:
    """Linear warm-up from lr / w to lr over w = max(`warmup_steps`, 1) steps, then lr constant;
    or, with `decay_steps`, linear decay from lr to 0 at step max(`decay_steps`, w + 1), 0 after."""
    lr, warm = float(learning_rate), max(int(warmup_steps), 1)
    if decay_steps is None:
        after = optax.constant_schedule(lr)
    else:
        after = optax.linear_schedule(lr, 0.0, max(int(decay_steps), warm + 1) - warm)
    return optax.join_schedules([optax.linear_schedule(lr / warm, lr, warm), after], [warm])


def make_optimizer(config, learning_rate: float | None = None, *, decay_steps: int | None = None,
                   eps: float = 1e-8, decays: Callable | None = None
                   ) -> optax.GradientTransformation:
    """Global-norm clipping at config.grad_clip (none at 0), then Adam (b1 0.9, b2 0.999, `eps`).

    Rate: without `learning_rate`, `learning_rate_schedule(config.learning_rate,
    config.warmup_steps, decay_steps)`; with it, that rate, constant (no warm-up, no decay: the
    adversarial generators and CRR). Both are optax schedules, so the optimizer state has the
    same structure either way.
    Weight decay: AdamW (decoupled) with config.weight_decay when that is > 0 or `decays` is
    given; `decays(path) -> bool` (a parameter's key path) picks the parameters that decay (all
    without it). With `decays` the optimizer is AdamW even at weight decay 0 (BERT4Rec's runs
    with `lr_decay` and no weight decay: their optimizer state has that layout); without both,
    plain Adam."""
    if learning_rate is not None:
        if decay_steps is not None:
            raise ValueError('make_optimizer: a constant learning_rate takes no decay_steps')
        sched = optax.constant_schedule(float(learning_rate))
    else:
        sched = learning_rate_schedule(config.learning_rate, config.warmup_steps, decay_steps)
    parts = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip > 0 else []
    wd = float(config.weight_decay)
    if wd > 0 or decays is not None:
        mask = None if decays is None else (
            lambda params: jax.tree_util.tree_map_with_path(lambda p, _: bool(decays(p)), params))
        parts.append(optax.adamw(sched, eps=eps, weight_decay=wd, mask=mask))
    else:
        parts.append(optax.adam(sched, eps=eps))
    return optax.chain(*parts)


def global_norm(tree) -> jax.Array:
    """sqrt of the sum of squares of every leaf (the `grad_norm` of the train logs)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(tree)))


@jax.named_scope('optimizer')    # a name in profiles (benchmarks/op_profile.py) only
def apply(tx: optax.GradientTransformation, grads, opt_state, params):
    """One update of `params` by `tx`: (new params, new optimizer state)."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
