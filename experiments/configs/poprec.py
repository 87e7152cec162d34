"""PopRec: recommends the most popular training items (no training).

python main.py --config=experiments/configs/poprec.py --workdir=/tmp/poprec [--config.data_dir=DIR]
Variant ':s3rec': popularity counted over every interaction, the evaluated ones included (how
S3-Rec counted for its published PopRec figures; a leak, kept only to compare with them).
"""
import ml_collections

from aos4rec_jax.methods import poprec as poprec_method
from experiments.configs import base


def s3rec(c):
    c.poprec.counts = 'all'
    return c


VARIANTS = {'s3rec': s3rec}


def get_config(variant=''):
    c = base.get_config()
    c.model = 'poprec'
    c.poprec = ml_collections.ConfigDict(poprec_method.OPTIONS)   # aos4rec_jax/methods/poprec.py
    c.train_steps = 0
    c = base.apply_variant(c, variant, 'poprec.py', VARIANTS)
    c.train_steps = 0
    return c
