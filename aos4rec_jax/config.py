"""Checks a run configuration before any work starts, so a bad value fails fast and clearly."""
from __future__ import annotations

import json
import os

import jax
import ml_collections

from aos4rec_jax import sampling

SELECT_BY = ('ndcg', 'full_ndcg', 'nll_oracle', 'last')
STRATEGIES = ('beam', 'greedy', 'sample', 'gumbel', 'multi_rra', 'multi_ra', 'topk')
DTYPES = ('float32', 'bfloat16')
LIPSCHITZ = ('gp', 'clip', 'none')
BELOW_BAR = ('warn', 'stop')
CRITIC_INIT = ('random', 'generator')


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
        'successor_sampler': 'gumbel',     # how Eq. 8's successors are drawn (the same
                                           # distribution): inverse_cdf (a uniform located in the
                                           # cumulative probabilities; about 8x faster on a CPU)
                                           # | gumbel (Gumbel-max over V, as runs before this
                                           # option did; experiments/configs/aos4rec.py: inverse_cdf)
        'critic_encode_once': False,       # a critic update encodes the history once for its
                                           # real, fake and penalty passes (the same function,
                                           # faster; without critic_dropout only) | False: once a
                                           # pass, as runs before this option did (XLA sums the
                                           # encoder's gradients in another order: last bits);
                                           # experiments/configs/aos4rec.py: True
        'list_sampler': 'gumbel',          # how the generated lists y^ are drawn (the same
                                           # distribution): gumbel (Gumbel-max: V Gumbel numbers
                                           # a step, as runs before this option did) | inverse_cdf
                                           # (one uniform a step; faster on a CPU);
                                           # experiments/configs/aos4rec.py: inverse_cdf
        'successors_from_decode': False,   # Eq. 8's successors drawn in the pass that decodes
                                           # y^ (the same distribution, without a teacher-forced
                                           # pass of G over y^; faster) | False: from that pass,
                                           # as runs before this option did;
                                           # experiments/configs/aos4rec.py: True
        'gamma': 1.0,                      # discount in the advantage of Eq. 4 (paper: 1)
        'td_weight': 1.0,                  # weight of the TD(0) loss (Eq. 8) in the critic loss
        'temperature': 1.0,                # Gumbel-max sampling temperature of generated lists
        'g_learning_rate': 1e-4,           # generator Adam learning rate in the SSRGAN phase
        'd_learning_rate': 1e-4,           # critic Adam learning rate (b1 0.5, b2 0.9)
        'lipschitz': 'gp',                 # critic constraint: gp (gradient penalty on the
                                           # embedded inputs) | clip (weights) | none; critic.py
        'gp_weight': 10.0,                 # lambda of the gradient penalty
        'clip_value': 0.01,                # weight clipping bound (lipschitz=clip)
        'critic_dropout': 0.0,             # dropout inside the critic (its updates only; the
                                           # generator's advantages and the measurement: none)
        'critic_eval_users': 512,          # held-out validation users on which the critic's
                                           # separation is measured at every validation of the
                                           # critic and SSRGAN phases (0: not measured)
        'critic_eval_every': 0,            # in the critic phase, also measure every N steps
                                           # (0: only at the validation steps, eval_every)
        'critic_patience': 0,              # stopping rule of critic pretraining: stop updating
                                           # the critic after N measurements in a row whose
                                           # val_auc does not beat the best by critic_min_delta
                                           # (0: off, all critic_pretrain_steps run; that
                                           # count stays the cap); docs/aos4rec.md
        'critic_min_delta': 0.005,         # the AUC gain that counts as an improvement
        'critic_auc_bar': 0.7,             # the critic's val_auc the SSRGAN phase asks for
                                           # (checked on entering it; 0: no check)
        'critic_below_bar': 'warn',        # a critic under the bar: warn (one line, the run goes
                                           # on) | stop (RunError; the critic is saved, rerun with
                                           # warn or a lower bar to go on from it)
        'critic_holdout': 0.0,             # fraction of users (a fixed seeded draw,
                                           # data.holdout_users) whose training windows the
                                           # seq2seq phase never sees; the critic and SSRGAN
                                           # phases train on those users' windows only (0: all
                                           # phases on every user's windows, as the paper)
        'critic_init': 'random',           # the critic's backbone on entering the SSRGAN phase:
                                           # random (its own init) | generator (a copy of the
                                           # generator that starts the phase; head random)
        'critic_width': 0,                 # the critic's width: 0 = the generator's
                                           # (model_kwargs); N: embed_dim = hidden_dim = N and
                                           # mlp_dim scaled by N / embed_dim
        'critic_keep_best': False,         # with the stopping rule: the SSRGAN phase starts
                                           # from the critic of the best val_auc measured in
                                           # pretraining (kept in the state as critic_best, with
                                           # its optimizer state), not the last one; the bar is
                                           # checked on it (False: the last critic, as runs
                                           # before this option did)
        'critic_auc': 'pooled',            # the critic's AUC that the stopping rule,
                                           # critic_keep_best and critic_auc_bar read: pooled
                                           # (val_auc: every user's real list against every
                                           # user's generated one, as runs before this option)
                                           # | paired (val_auc_paired: each user's real list
                                           # against its own generated list, what Eq. 7 and
                                           # Eq. 4 compare). Both are logged either way
        'critic_frozen': '',               # critic parameters its updates leave unchanged: a
                                           # comma list of paths ('backbone',
                                           # 'backbone/item_embed', globs as 'backbone/encoder*');
                                           # a pattern names a parameter or everything under it
                                           # (critic.frozen_mask). With critic_init=generator,
                                           # 'backbone' is a trained head on the generator's
                                           # frozen features ('': every parameter trains)
        'gan_start_competes': False,       # the generator that starts the SSRGAN phase is
                                           # validated when the first round begins and competes
                                           # in model selection: SSRGAN rounds are kept only if
                                           # one beats it (False: selection restarts with the
                                           # first round, as runs before this option did)
        'gan_mle_weight': 0.0,             # MLE loss mixed into generator updates (paper: none)
        'gan_adv_weight': 1.0,             # weight of Eq. 4 in generator updates (0 with
                                           # gan_mle_weight > 0: the MLE-only control)
    }


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def _check(cond: bool, field: str, msg: str):
    if not cond:
        raise ConfigError(f'config.{field}: {msg}')


def prepared_protocol(c: ml_collections.ConfigDict) -> tuple[dict, str] | None:
    """(the protocol settings the run's data was or will be prepared with, where they come
    from): `data_dir`/protocol.json, or the synthetic profile's settings; None when unknown (a
    data_dir that does not exist yet: the loader reports it)."""
    if c.data_dir:
        path = os.path.join(c.data_dir, 'protocol.json')
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f), path
    import data_prep                         # numpy only; the synthetic data's settings
    try:
        s = data_prep.settings_for(c.synthetic.profile, seed=int(c.synthetic.data_seed))
    except data_prep.DataPrepError:
        return None
    return ({f: getattr(s, f) for f in ('protocol', 'target_len', 'k', 'cap')},
            f"the synthetic data's profile {c.synthetic.profile!r}")


def _check_target_len(c: ml_collections.ConfigDict) -> None:
    """A `target_len` override must keep the evaluation the data was prepared for: the candidate
    lists hold the first min(T0, h) items of each evaluated part (T0 the prepared target_len,
    h <= cap its length), so T must give the same min(T, cap); and the paper protocol compares a
    generated K-list with the first T items, so there T must equal K (leave-one-out: T free)."""
    if int(c.target_len) == -1:
        return
    found = prepared_protocol(c)
    if found is None:
        return
    proto, where = found
    T, T0, K = int(c.target_len), int(proto['target_len']), int(proto['k'])
    cap = int(proto.get('cap', T0))
    _check(min(T, cap) == min(T0, cap), 'target_len',
           f'{T} no longer matches the candidate lists of the data ({where}): they were made with '
           f'target_len {T0}, i.e. from the first {min(T0, cap)} items of each evaluated part '
           f'(cap {cap}), and T = {T} would evaluate the first {min(T, cap)}; use -1 (the '
           f"data's {T0}) or prepare the data again with --target-len {T}")
    if proto.get('protocol', 'paper') == 'paper':
        _check(T == K, 'target_len',
               f'{T} differs from K = {K} ({where}): the paper protocol generates a K-list '
               f"against the first T items and needs T = K; use -1 (the data's {T0})")


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
    _check(int(c.loss_chunk) >= 0, 'loss_chunk',
           f'must be >= 0 (0 = through the logits), got {c.loss_chunk}')
    _check(isinstance(c.get('pack_positions', False), bool), 'pack_positions',
           f"must be True or False, got {c.get('pack_positions')!r}")
    _check(isinstance(c.get('pack_sequences', False), bool), 'pack_sequences',
           f"must be True or False, got {c.get('pack_sequences')!r}")
    for f in ('history_len', 'target_len'):
        _check(c[f] == -1 or c[f] >= 1, f, f'must be -1 (from the dataset) or >= 1, got {c[f]}')
    _check_target_len(c)
    _check(c.select_by in SELECT_BY, 'select_by', f"{c.select_by!r} is not one of {SELECT_BY}")
    patience = int(c.early_stop_patience)
    _check(patience >= 0, 'early_stop_patience', f'must be >= 0, got {patience}')
    _check(patience == 0 or int(c.eval_every) > 0, 'early_stop_patience',
           f'{patience} needs validations during the run: set --config.eval_every > 0')
    _check(patience == 0 or c.select_by != 'last', 'early_stop_patience',
           "select_by 'last' improves at every validation, so nothing would stop the run")
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
    for f in ('critic_pretrain_steps', 'gan_steps', 'critic_eval_users', 'critic_eval_every',
              'critic_patience', 'critic_width'):
        _check(int(a[f]) >= 0, f'aos4rec.{f}', f'must be >= 0, got {a[f]}')
    for f in ('mu', 'temperature', 'g_learning_rate', 'd_learning_rate', 'clip_value'):
        _check(a[f] > 0, f'aos4rec.{f}', f'must be > 0, got {a[f]}')
    for f in ('gamma', 'td_weight', 'gp_weight', 'gan_mle_weight', 'gan_adv_weight'):
        _check(a[f] >= 0, f'aos4rec.{f}', f'must be >= 0, got {a[f]}')
    _check(a.gan_adv_weight > 0 or a.gan_mle_weight > 0, 'aos4rec.gan_adv_weight',
           'is 0 and so is aos4rec.gan_mle_weight: the generator would get no gradient')
    _check(0 <= a.critic_dropout < 1, 'aos4rec.critic_dropout', f'must be in [0, 1), got {a.critic_dropout}')
    _check(a.lipschitz in LIPSCHITZ, 'aos4rec.lipschitz', f'{a.lipschitz!r} is not one of {LIPSCHITZ}')
    _check(a.critic_min_delta >= 0, 'aos4rec.critic_min_delta', f'must be >= 0, got {a.critic_min_delta}')
    _check(0 <= a.critic_auc_bar <= 1, 'aos4rec.critic_auc_bar', f'must be in [0, 1], got {a.critic_auc_bar}')
    _check(a.critic_below_bar in BELOW_BAR, 'aos4rec.critic_below_bar',
           f'{a.critic_below_bar!r} is not one of {BELOW_BAR}')
    if int(a.critic_patience) > 0 and a.adversarial:
        _check(int(a.critic_eval_users) > 0, 'aos4rec.critic_patience',
               'the stopping rule reads the critic\'s AUC on held-out users: set '
               'aos4rec.critic_eval_users > 0')
        _check(int(a.critic_eval_every) > 0 or int(c.eval_every) > 0, 'aos4rec.critic_patience',
               'the stopping rule needs measurements during critic pretraining: set '
               'aos4rec.critic_eval_every (or eval_every) > 0')
    _check(0 <= float(a.critic_holdout) < 1, 'aos4rec.critic_holdout',
           f'must be in [0, 1), got {a.critic_holdout}')
    _check(str(a.get('critic_auc', 'pooled')) in ('pooled', 'paired'), 'aos4rec.critic_auc',
           f"{a.get('critic_auc')!r} is not one of ('pooled', 'paired')")
    _check(str(a.get('list_sampler', 'gumbel')) in sampling.SAMPLERS, 'aos4rec.list_sampler',
           f"{a.get('list_sampler')!r} is not one of {sampling.SAMPLERS}")
    _check(str(a.get('successor_sampler', 'gumbel')) in sampling.SAMPLERS,
           'aos4rec.successor_sampler',
           f"{a.get('successor_sampler')!r} is not one of {sampling.SAMPLERS}")
    _check(a.critic_init in CRITIC_INIT, 'aos4rec.critic_init',
           f'{a.critic_init!r} is not one of {CRITIC_INIT}')
    _check(a.critic_init != 'generator' or int(a.critic_width) == 0, 'aos4rec.critic_init',
           f"'generator' copies the generator into the critic, which needs the generator's "
           f'width: aos4rec.critic_width must be 0, got {a.critic_width}')
    if int(a.critic_width) > 0 and c.model == 'transformer':
        _check(int(a.critic_width) % int(c.model_kwargs.num_heads) == 0, 'aos4rec.critic_width',
               f'{a.critic_width} is not a multiple of model_kwargs.num_heads '
               f'({c.model_kwargs.num_heads})')
    if a.init_from:
        _check(a.adversarial, 'aos4rec.init_from', 'only the SSRGAN phase starts from another run; '
               'set aos4rec.adversarial=True')
        _check(int(c.train_steps) == 0, 'aos4rec.init_from',
               f'the generator comes from {a.init_from}; set train_steps=0 (got {c.train_steps})')
    methods.get(c.model).validate_config(c)
