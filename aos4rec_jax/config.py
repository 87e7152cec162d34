"""Checks a run configuration before any work starts, so a bad value fails fast and clearly."""
from __future__ import annotations

import ml_collections

MODELS = ('poprec', 'transformer', 'gru')
STRATEGIES = ('beam', 'greedy', 'sample', 'gumbel', 'multi_rra', 'multi_ra')
DTYPES = ('float32', 'bfloat16')


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def _check(cond: bool, field: str, msg: str):
    if not cond:
        raise ConfigError(f'config.{field}: {msg}')


def validate(c: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first invalid field."""
    _check(c.model in MODELS, 'model', f'{c.model!r} is not one of {MODELS}')
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
    d = c.decode
    _check(d.strategy in STRATEGIES, 'decode.strategy', f'{d.strategy!r} is not one of {STRATEGIES}')
    _check(d.beam_size >= 1, 'decode.beam_size', f'must be >= 1, got {d.beam_size}')
    _check(d.temperature > 0, 'decode.temperature', f'must be > 0, got {d.temperature}')
    _check(d.num_sequences >= 1, 'decode.num_sequences', f'must be >= 1, got {d.num_sequences}')
    s = c.synthetic
    _check(s.num_users >= 1, 'synthetic.num_users', f'must be >= 1, got {s.num_users}')
    _check(s.seq_len >= 4, 'synthetic.seq_len', f'must be >= 4, got {s.seq_len}')
    _check(s.vocab_size >= 2, 'synthetic.vocab_size', f'must be >= 2, got {s.vocab_size}')
    _check(c.compute_dtype in DTYPES, 'compute_dtype', f'{c.compute_dtype!r} is not one of {DTYPES}')
    m = c.model_kwargs
    for f in ('embed_dim', 'num_layers', 'num_heads', 'mlp_dim', 'hidden_dim'):
        _check(m[f] >= 1, f'model_kwargs.{f}', f'must be >= 1, got {m[f]}')
    _check(m.embed_dim % m.num_heads == 0, 'model_kwargs.num_heads',
           f'embed_dim {m.embed_dim} is not divisible by num_heads {m.num_heads}')
    _check(0 <= m.dropout_rate < 1, 'model_kwargs.dropout_rate', f'must be in [0, 1), got {m.dropout_rate}')
