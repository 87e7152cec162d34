"""PopRec: recommends the most popular training items (no training).

python main.py --config=experiments/configs/poprec.py --workdir=/tmp/poprec [--config.data_dir=DIR]
"""
from experiments.configs import base


def get_config(variant=''):
    c = base.get_config()
    c.model = 'poprec'
    c.train_steps = 0
    c = base.apply_variant(c, variant, 'poprec.py')
    c.train_steps = 0
    return c
