"""PopRec: every user gets the items with the most training interactions (AOS4Rec Table 3).

It has no parameters to learn: its "params" are the item counts of the train parts, so it has
no train state, no phases and no checkpoints (`trains = False`).
"""
from __future__ import annotations

import jax.numpy as jnp

from aos4rec_jax import config as config_lib
from aos4rec_jax import evaluation
from aos4rec_jax.methods.base import Method


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


class PopRec(Method):
    trains = False

    @classmethod
    def validate_config(cls, config):
        a = config.aos4rec
        if a.oracle or a.adversarial:
            raise config_lib.ConfigError('config.aos4rec: oracle / adversarial training needs a '
                                         'seq2seq model (transformer or gru), not poprec')

    def fit(self):
        return fit(self.ds)

    def generate_fn(self):
        return make_generate_fn(self.info)

    def decode_description(self):
        return 'top-k scores'


METHODS = {'poprec': PopRec}
