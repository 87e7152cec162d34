"""Checks a run configuration before any work starts, so a bad value fails fast and clearly."""
from __future__ import annotations

import os

import jax
import ml_collections

STRATEGIES = ('beam', 'greedy', 'sample', 'gumbel', 'multi_rra', 'multi_ra', 'topk')
DTYPES = ('float32', 'bfloat16')
LIPSCHITZ = ('gp', 'clip', 'none')


def aos4rec_defaults() -> dict:
    """The `config.aos4rec` block (paper Sec. 4; aos4rec_jax/ssrgan.py), off by default.

    Schedule: `train_steps` seq2seq steps (MLE, or oracular learning with `oracle`), then, with
    `adversarial`: `critic_pretrain_steps` critic updates, then `gan_steps` SSRGAN rounds.
    """
    return {
        'oracle': False,                   # Sec. 4.1 oracular learning in the seq2seq phase
        'beam_size': 5,                    # b: beam candidates for the oracle (paper: 5)
        'mu': 12.0,                        # p = mu / (mu + exp(epoch / mu)) (paper: 12)
        'adversarial': False,              # Sec. 4.2 SSRGAN after the seq2seq phase
        'init_from': '',                   # a finished run's workdir: its kept generator
                                           # parameters start the SSRGAN phase (train_steps=0)
        'critic_pretrain_steps': 200,      # critic updates against the fixed generator
        'gan_steps': 500,                  # SSRGAN rounds (g_steps + d_steps updates each)
        'g_steps': 1,                      # generator updates per round (paper: 1)
        'd_steps': 5,                      # critic updates per round (paper: 5)
        'num_next': 3,                     # c: sampled successors per step in Eq. 8 (paper: 3)
        'gamma': 1.0,                      # discount in the advantage of Eq. 4 (paper: 1)
        'td_weight': 1.0,                  # weight of the TD(0) loss (Eq. 8) in the critic loss
        'temperature': 1.0,                # Gumbel-max sampling temperature of generated lists
        'g_learning_rate': 1e-4,           # generator Adam learning rate in the SSRGAN phase
        'd_learning_rate': 1e-4,           # critic Adam learning rate (b1 0.5, b2 0.9)
        'lipschitz': 'gp',                 # critic constraint: gp (gradient penalty on the
                                           # embedded inputs) | clip (weights) | none; critic.py
        'gp_weight': 10.0,                 # lambda of the gradient penalty
        'clip_value': 0.01,                # weight clipping bound (lipschitz=clip)
        'critic_dropout': 0.0,             # dropout inside the critic
        'gan_mle_weight': 0.0,             # MLE loss mixed into generator updates (paper: none)
        'gan_adv_weight': 1.0,             # weight of Eq. 4 in generator updates (0 with
                                           # gan_mle_weight > 0: the MLE-only control)
    }


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def _check(cond: bool, field: str, msg: str):
    if not cond:
        raise ConfigError(f'config.{field}: {msg}')


def validate(c: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first invalid field."""
    from aos4rec_jax import methods          # the registry imports this module
    known = methods.names()
    _check(c.model in known, 'model', f'{c.model!r} is not one of {known}')
    for f in ('train_steps', 'log_every', 'eval_every', 'checkpoint_every', 'max_eval_users'):
        _check(int(c[f]) >= 0, f, f'must be >= 0, got {c[f]}')
    for f in ('batch_size', 'eval_batch_size', 'keep_checkpoints'):
        _check(int(c[f]) >= 1, f, f'must be >= 1, got {c[f]}')
    _check(c.learning_rate > 0, 'learning_rate', f'must be > 0, got {c.learning_rate}')
    _check(c.warmup_steps >= 0, 'warmup_steps', f'must be >= 0, got {c.warmup_steps}')
    _check(c.grad_clip >= 0, 'grad_clip', f'must be >= 0, got {c.grad_clip}')
    _check(c.weight_decay >= 0, 'weight_decay', f'must be >= 0, got {c.weight_decay}')
    for f in ('history_len', 'target_len'):
        _check(c[f] == -1 or c[f] >= 1, f, f'must be -1 (from the dataset) or >= 1, got {c[f]}')
    _check(c.select_by in ('ndcg', 'nll_oracle', 'last'), 'select_by',
           f"{c.select_by!r} is not one of ('ndcg', 'nll_oracle', 'last')")
    if c.select_by == 'nll_oracle' and c.data_dir and os.path.isdir(c.data_dir):
        _check(os.path.exists(os.path.join(c.data_dir, 'oracle.npz')), 'select_by',
               f'nll_oracle needs the synthetic oracle data, and {c.data_dir} has no oracle '
               '(the :quick variant selects by it); add --config.select_by=ndcg')
    d = c.decode
    _check(d.strategy in STRATEGIES, 'decode.strategy', f'{d.strategy!r} is not one of {STRATEGIES}')
    _check(d.beam_size >= 1, 'decode.beam_size', f'must be >= 1, got {d.beam_size}')
    _check(d.temperature > 0, 'decode.temperature', f'must be > 0, got {d.temperature}')
    _check(d.num_sequences >= 1, 'decode.num_sequences', f'must be >= 1, got {d.num_sequences}')
    s = c.synthetic
    _check(s.num_users >= 1, 'synthetic.num_users', f'must be >= 1, got {s.num_users}')
    _check(s.seq_len >= 4, 'synthetic.seq_len', f'must be >= 4, got {s.seq_len}')
    _check(s.vocab_size >= 2, 'synthetic.vocab_size', f'must be >= 2, got {s.vocab_size}')
    n_dev = int(c.mesh.get('num_devices', 0))
    _check(n_dev >= 0, 'mesh.num_devices', f'must be >= 0 (0 = every device), got {n_dev}')
    _check(n_dev <= jax.device_count(), 'mesh.num_devices',
           f'{n_dev} devices asked, {jax.device_count()} available')
    _check(c.compute_dtype in DTYPES, 'compute_dtype', f'{c.compute_dtype!r} is not one of {DTYPES}')
    m = c.model_kwargs
    for f in ('embed_dim', 'num_layers', 'num_heads', 'mlp_dim', 'hidden_dim'):
        _check(m[f] >= 1, f'model_kwargs.{f}', f'must be >= 1, got {m[f]}')
    _check(m.embed_dim % m.num_heads == 0, 'model_kwargs.num_heads',
           f'embed_dim {m.embed_dim} is not divisible by num_heads {m.num_heads}')
    _check(0 <= m.dropout_rate < 1, 'model_kwargs.dropout_rate', f'must be in [0, 1), got {m.dropout_rate}')
    a = c.aos4rec
    for f in ('beam_size', 'g_steps', 'd_steps', 'num_next'):
        _check(int(a[f]) >= 1, f'aos4rec.{f}', f'must be >= 1, got {a[f]}')
    for f in ('critic_pretrain_steps', 'gan_steps'):
        _check(int(a[f]) >= 0, f'aos4rec.{f}', f'must be >= 0, got {a[f]}')
    for f in ('mu', 'temperature', 'g_learning_rate', 'd_learning_rate', 'clip_value'):
        _check(a[f] > 0, f'aos4rec.{f}', f'must be > 0, got {a[f]}')
    for f in ('gamma', 'td_weight', 'gp_weight', 'gan_mle_weight', 'gan_adv_weight'):
        _check(a[f] >= 0, f'aos4rec.{f}', f'must be >= 0, got {a[f]}')
    _check(a.gan_adv_weight > 0 or a.gan_mle_weight > 0, 'aos4rec.gan_adv_weight',
           'is 0 and so is aos4rec.gan_mle_weight: the generator would get no gradient')
    _check(0 <= a.critic_dropout < 1, 'aos4rec.critic_dropout', f'must be in [0, 1), got {a.critic_dropout}')
    _check(a.lipschitz in LIPSCHITZ, 'aos4rec.lipschitz', f'{a.lipschitz!r} is not one of {LIPSCHITZ}')
    if a.init_from:
        _check(a.adversarial, 'aos4rec.init_from', 'only the SSRGAN phase starts from another run; '
               'set aos4rec.adversarial=True')
        _check(int(c.train_steps) == 0, 'aos4rec.init_from',
               f'the generator comes from {a.init_from}; set train_steps=0 (got {c.train_steps})')
    methods.get(c.model).validate_config(c)
