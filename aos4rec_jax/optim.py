"""One optimizer update and the gradient norm every train step logs (shared by all methods)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def global_norm(tree) -> jax.Array:
    """sqrt of the sum of squares of every leaf (the `grad_norm` of the train logs)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(tree)))


def apply(tx: optax.GradientTransformation, grads, opt_state, params):
    """One update of `params` by `tx`: (new params, new optimizer state)."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
