"""CRR-Transformer: next-item pretraining, then Critic Regularized Regression (offline RL).

The method: aos4rec_jax/methods/crr.py (the policy is models/gpt.py's causal Transformer, the Q
critic models/crr.py); docs/crr.md.

python main.py --config=experiments/configs/crr.py --workdir=/tmp/crr \
    --config.data_dir=PREPARED_DIR

Stage 1 runs config.train_steps steps of next-item cross-entropy (methods/gpt.py's training, the
GPT-style network with its defaults: d 64, 2 layers, 1 head, dropout 0.1, Adam 1e-3, batch 64);
stage 2 runs crr.crr_steps CRR steps from the kept stage-1 policy, which competes in model
selection (crr.start_competes, True here). CRR's settings live in the `crr` block
(methods/crr.CRR.OPTIONS): beta 1 and m = 4 sampled actions (the paper), the exponential weights
clipped at 20, gamma -1 = 0.9 on the yoochoose profile and 0.6 otherwise
(the paper's YOOCHOOSE / MovieLens values), Polyak rate tau 0.005; the reward: the rating
mapped linearly to 0..1 where the data has ratings, else 1 an interaction (crr.reward_from).
Variants: ':tiny' (seconds on a CPU: 60 + 40 steps), ':quick', ':paper' (embedding size 128),
':nopretrain' (stage 2 from a random policy: the paper's ablation of stage 1).
"""
from aos4rec_jax.methods.crr import CRR
from experiments.configs import _next_item
from experiments.configs import base
from experiments.configs import gpt as gpt_cfg


def tiny(c):
    c = base.tiny(c)
    c.crr.crr_steps = 40
    return c


def quick(c):
    c = base.quick(c)
    c.crr.crr_steps = 1000
    return c


def nopretrain(c):
    c.train_steps = 0
    return c


VARIANTS = {'tiny': tiny, 'quick': quick, 'paper': gpt_cfg.paper, 'nopretrain': nopretrain}


def get_config(variant=''):
    c = gpt_cfg.network_defaults(_next_item.get_config('crr', CRR.OPTIONS))
    c.train_steps = 20000
    c.crr.crr_steps = 5000
    # the pretrained policy that starts stage 2 competes in model selection: it is kept unless a
    # CRR step validates better (docs/crr.md; methods/crr.py's default False restarts selection)
    c.crr.start_competes = True
    return base.apply_variant(c, variant, 'crr.py', VARIANTS)
