"""PopRec: every user gets the items with the most training interactions (AOS4Rec Table 3).

It has no parameters to learn: its "params" are item counts, so it has no train state, no
phases and no checkpoints (`trains = False`). `poprec.counts`:
  'train' (default) the interactions of the train parts only;
  'all'   every interaction, validation and test parts included: the evaluated items leak into
          the ranking. This is how S3-Rec (CIKM 2020) counted for its PopRec rows; with it our
          leave-one-out data reproduce their figures (docs/results/next_item.md).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from aos4rec_jax import config as config_lib
from aos4rec_jax import evaluation
from aos4rec_jax.methods.base import Method, checked_options, options_block


OPTIONS = {'counts': 'train'}     # train | all (see the module docstring)


def fit(ds, counts: str = 'train') -> dict:
    if counts == 'all':
        p = ds.prepared
        c = np.bincount(p.items_flat, minlength=ds.info.num_items + 1).astype(np.int64)
        c[0] = 0
    else:
        c = ds.item_counts()
    return {'counts': jnp.asarray(c, jnp.float32)}


def make_generate_fn(info):
    def generate_fn(params, batch, rng):
        del rng
        return evaluation.topk_sampled_and_full(params['counts'], batch, info.k)
    return generate_fn


class PopRec(Method):
    trains = False

    @classmethod
    def validate_config(cls, config):
        opts = checked_options(config, 'poprec', OPTIONS)
        if opts.counts not in ('train', 'all'):
            raise config_lib.ConfigError(f"config.poprec.counts: {opts.counts!r} is not one of ('train', 'all')")
        a = config.aos4rec
        if a.oracle or a.adversarial:
            raise config_lib.ConfigError('config.aos4rec: oracle / adversarial training needs a '
                                         'seq2seq model (transformer or gru), not poprec')

    def fit(self):
        return fit(self.ds, options_block(self.config, 'poprec', OPTIONS).counts)

    def generate_fn(self):
        return make_generate_fn(self.info)

    def decode_description(self):
        return 'top-k scores'


METHODS = {'poprec': PopRec}
