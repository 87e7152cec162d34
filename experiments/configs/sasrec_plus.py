"""SASRec+: the SASRec network trained with full softmax cross-entropy over all items (the
variant later work found much stronger in the full-ranking scene). Same as
`experiments/configs/sasrec.py:plus`; variants as there.

python main.py --config=experiments/configs/sasrec_plus.py --workdir=/tmp/sasrec_plus \
    --config.data_dir=PREPARED_DIR
"""
from experiments.configs import sasrec


def get_config(variant=''):
    return sasrec.get_config(','.join(v for v in ('plus', variant) if v))
