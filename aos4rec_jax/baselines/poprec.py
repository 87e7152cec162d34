"""PopRec: every user gets the items with the most training interactions (AOS4Rec Table 3).

It has no parameters to learn: its "params" are the item counts of the train parts.
"""
from __future__ import annotations

import jax.numpy as jnp

from aos4rec_jax import evaluation


def fit(ds) -> dict:
    return {'counts': jnp.asarray(ds.item_counts(), jnp.float32)}


def make_generate_fn(info):
    def generate_fn(params, batch, rng):
        del rng
        scores = params['counts']
        sampled = None if batch.get('candidates') is None else evaluation.topk_lists(
            scores, info.k, candidates=batch['candidates'], banned=batch['banned'])
        full = evaluation.topk_lists(scores, info.k, banned=batch['banned'])
        return sampled, full
    return generate_fn
