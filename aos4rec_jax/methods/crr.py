"""CRR-Transformer (Xi, Zhao, Liu, Ouyang, Wu; arXiv:2307.14450; seed 002): a causal Transformer
policy pretrained on next-item prediction, then fine-tuned offline by Critic Regularized
Regression (CRR; Wang et al., arXiv:2006.15134). docs/crr.md has the derivation, every deviation
from the paper and the measured runs.

Networks. The policy pi(a | s) = softmax over the items of the GPT-style causal Transformer of
models/gpt.py (the next-item network methods/gpt.py trains; the paper: DistilGPT2). The critic
Q(s, .) (models/crr.py) is an MLP head over a second causal encoder of the same configuration,
scoring every item at once; a target copy Q' follows it by Polyak averaging.

The MDP on the logged data. For a user's train items t_1..t_n, the state s_i is the prefix
t_1..t_i (the encoder's position i), the action a_i = t_{i+1} the item the user took next, the
next state s_{i+1} = the prefix one longer, and the reward r_i of that action comes from the data
(`crr.reward_from`):
  'constant'  r_i = `crr.reward` (1) for every interaction: clicks, or data without ratings;
  'rating'    r_i = `crr.reward` x map(rating of the interaction t_{i+1}), the rating of the
              action taken (data_prep keeps the MovieLens ratings; a dataset without them is
              refused, naming the field); map = `crr.rating_map`:
                'linear' (default)  (rating - lo) / (hi - lo), [lo, hi] the dataset's rating range
                                    (MovieLens 1..5 stars -> 0, 0.25, 0.5, 0.75, 1)
                'binary'            1 if rating >= `crr.rating_threshold` (4: liked) else 0
  'auto'      (default) 'rating' when the dataset has ratings, else 'constant'.
The paper only says the reward is "binary or multi-level feedback based on user rating";
'linear' is the default because it keeps every level of that feedback (a 5-star choice is worth
more than a 4-star one, a 1-star one nothing) on the same [0, 1] scale as the click reward 1.
The end of the train part ends the episode (`crr.terminal_at_end`). Each step draws B users and
takes each one's last W + 1 train items (the batches of stage 1, W = `gpt.train_len`'s rule:
history_len + K - 1): W transitions a row, padding masked (no reward, no loss).

Schedule (two phases; the trainer runs them, model selection restarts at the second; with
`crr.start_competes` the policy that starts it is validated on entry and competes):
  'pretrain'  config.train_steps   softmax cross-entropy of the next item (methods/gpt.py's loss)
  'crr'       crr.crr_steps        entered with the kept (best validation) pretrained policy, a
                                   fresh policy optimizer, the critic's encoder copied from the
                                   policy (`crr.critic_init`) and Q' = Q. Each step, on one batch:
    critic   y_i = r_i + gamma (1 - done_i) sum_a pi(a | s_{i+1}) Q'(s_{i+1}, a)     (td_target)
             L_Q = mean_i (Q(s_i, a_i) - y_i)^2, one Adam step (crr.critic_lr)
    target   Q' <- Q' + tau (Q_new - Q')                                             (soft_update)
    policy   A_i = Q(s_i, a_i) - 1/m sum_j Q(s_i, a_ij),  a_ij ~ pi(. | s_i), j = 1..m (advantage)
             w_i = min(exp(A_i / beta), clip)                                        (crr_weights)
             L_pi = -sum_i w_i log pi(a_i | s_i) / #transitions, one Adam step        (policy_loss)
  Q in A is the critic before this step's update, without dropout; pi in the TD target and for
  the m samples is the current policy without dropout; w, y and A carry no gradient.
  Defaults: beta 1, m 4 (the paper), clip 20 (CRR's), gamma 0.6 / 0.9 (the paper's MovieLens /
  YOOCHOOSE; `crr.gamma = -1` picks 0.9 for the yoochoose profile and 0.6 otherwise), tau 0.005.

The K-list: the policy's scores after the history, top-K among the allowed items (history
banned when the protocol bans it), as every next-item method (`decode.strategy = 'topk'`; the
GPT decoders work too).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from aos4rec_jax import config as config_lib
from aos4rec_jax import data as data_lib
from aos4rec_jax import optim
from aos4rec_jax import sampling
from aos4rec_jax.methods import init_from as init_from_lib
from aos4rec_jax.methods.base import Phase, checked_options
from aos4rec_jax.methods.gpt import GPT
from aos4rec_jax.models.crr import QCritic

NEG_INF = -1e30


# ------------------------------------------------------------------------------ the CRR pieces
def item_log_probs(logits):
    """log pi(. | s) [..., V] float32 from item logits [..., V] (index 0 = padding, never an action)."""
    return jax.nn.log_softmax(logits.astype(jnp.float32).at[..., 0].set(NEG_INF), axis=-1)


def td_target(reward, done, next_q, next_logits, gamma):
    """y = r + gamma (1 - done) E_{a' ~ pi(. | s')} Q'(s', a'), the expectation exact over the items.

    reward, done [...]; next_q [..., V] (the target critic at s'); next_logits [..., V] (the
    policy at s')."""
    pi = jnp.exp(item_log_probs(next_logits))
    v_next = jnp.sum(pi * next_q.astype(jnp.float32), axis=-1)
    return reward + gamma * (1.0 - done) * v_next


def advantage(q_sa, q_sampled):
    """A = Q(s, a) - mean_j Q(s, a_j): q_sa [...], q_sampled [m, ...]."""
    return q_sa - jnp.mean(q_sampled, axis=0)


def crr_weights(adv, beta, clip):
    """CRR's exponential filter: min(exp(A / beta), clip) (exp of at most log(clip): no overflow)."""
    return jnp.exp(jnp.minimum(adv / beta, math.log(clip)))


def policy_loss(logits, actions, weights, mask):
    """Weighted regression onto the logged actions: (sum_i mask_i w_i (-log pi(a_i | s_i)), sum
    mask); logits [..., V], actions [...], weights [...] (no gradient flows through them)."""
    nll = -jnp.take_along_axis(item_log_probs(logits), actions[..., None], axis=-1)[..., 0]
    m = mask.astype(jnp.float32)
    return jnp.sum(jax.lax.stop_gradient(weights) * nll * m), jnp.sum(m)


def soft_update(target, online, tau):
    """Polyak averaging: every leaf moves by tau of its distance to the online one."""
    return jax.tree_util.tree_map(lambda t, o: t + tau * (o - t), target, online)


def gather_items(values, items):
    """values [..., V], items [...] -> values at the items [...]."""
    return jnp.take_along_axis(values, items[..., None], axis=-1)[..., 0]


def rating_reward(ratings, rating_map: str, lo: float, hi: float, threshold: float):
    """The reward in [0, 1] of each rating: 'linear' (r - lo) / (hi - lo) over the dataset's
    rating range [lo, hi] (1 when every rating is the same), 'binary' 1 if r >= threshold else 0."""
    r = jnp.asarray(ratings, jnp.float32)
    if rating_map == 'binary':
        return (r >= threshold).astype(jnp.float32)
    if hi <= lo:
        return jnp.ones_like(r)
    return (r - lo) / (hi - lo)


def discount_for(gamma: float, profile: str) -> float:
    """`crr.gamma`, or with -1 the paper's: 0.9 for YOOCHOOSE (the yoochoose profile), else 0.6."""
    if gamma >= 0:
        return float(gamma)
    return 0.9 if profile == 'yoochoose' else 0.6


# ------------------------------------------------------------------------------ the method
class CRR(GPT):
    """Stage 1: methods/gpt.py's next-item training; stage 2: CRR (the module docstring)."""

    OPTIONS = dict(GPT.OPTIONS, **{
        'crr_steps': 1000,        # stage-2 (CRR) steps; stage 1 = config.train_steps
        'gamma': -1.0,            # discount (-1: 0.9 on the yoochoose profile, 0.6 otherwise)
        'beta': 1.0,              # temperature of exp(A / beta)
        'num_samples': 4,         # m: actions sampled from pi for the advantage's baseline
        'weight_clip': 20.0,      # upper clip of exp(A / beta)
        'tau': 0.005,             # Polyak rate of the target critic
        'critic_lr': 1e-3,        # Adam rate of the critic
        'policy_lr': 0.0,         # Adam rate of the policy in stage 2 (0: config.learning_rate)
        'reward': 1.0,            # reward of an interaction ('constant'); scales the rating's
        'reward_from': 'auto',    # 'auto' (rating if the data has ratings) | 'constant' | 'rating'
        'rating_map': 'linear',   # rating -> reward: 'linear' (range -> 0..1) | 'binary'
        'rating_threshold': 4.0,  # 'binary': a rating >= this rewards 1, else 0
        'terminal_at_end': True,  # the last train item ends the episode (no bootstrap after it)
        'critic_init': 'policy',  # critic encoder at stage 2: 'policy' (copy) | 'random'
        'start_from': 'best',     # stage-2 policy: 'best' (kept stage-1 step) | 'last'
        'init_from': '',          # with train_steps 0: stage 2 from this run folder's kept policy
        'start_competes': False,  # the policy that starts stage 2 is validated first and kept
                                  # unless a CRR step validates better (False: selection
                                  # restarts with stage 2's first validation)
        'sampler': 'inverse_cdf', # how the m actions are drawn from pi (the same distribution):
                                  # 'inverse_cdf' (sampling.from_logits) | 'gumbel'
                                  # (jax.random.categorical: V noise numbers an action)
    })

    # runs from before ratings were kept had constant rewards on data without ratings, which
    # 'auto' reproduces there (a folder re-prepared with ratings is refused by its fingerprint)
    # runs from before start_competes restarted model selection with stage 2's first validation
    # runs from before sampler drew the m actions with Gumbel-max
    OPTIONS_ADDED_LATER = {'reward_from': 'auto', 'rating_map': 'linear', 'rating_threshold': 4.0,
                           'start_competes': False, 'sampler': 'gumbel'}

    def __init__(self, config, ds):
        super().__init__(config, ds)
        o = self.opts
        self.gamma = discount_for(float(o.gamma), self.info.profile)
        self.reward_source, self.rating_lo, self.rating_hi = self.reward_setting(config, ds)
        self.critic = QCritic(self.model.cfg)
        lr = float(o.policy_lr) or float(config.learning_rate)
        self.policy_tx = optim.make_optimizer(config, learning_rate=lr)
        self.critic_tx = optim.make_optimizer(config, learning_rate=float(o.critic_lr))

    # -- config --------------------------------------------------------------------------------
    @classmethod
    def validate_config(cls, config):
        opts = checked_options(config, config.model, cls.OPTIONS)
        super().validate_options(opts, config)
        name = f'config.{config.model}'

        def bad(field, why):
            raise config_lib.ConfigError(f'{name}.{field}: {why}, got {opts[field]!r}')
        if int(opts.crr_steps) < 0:
            bad('crr_steps', 'must be >= 0')
        if not (opts.gamma == -1 or 0 <= opts.gamma < 1):
            bad('gamma', 'must be in [0, 1) (or -1: by the data profile)')
        if opts.beta <= 0:
            bad('beta', 'must be > 0')
        if int(opts.num_samples) < 1:
            bad('num_samples', 'must be >= 1')
        if opts.weight_clip <= 0:
            bad('weight_clip', 'must be > 0')
        if not 0 < opts.tau <= 1:
            bad('tau', 'must be in (0, 1]')
        if opts.critic_lr <= 0:
            bad('critic_lr', 'must be > 0')
        if opts.policy_lr < 0:
            bad('policy_lr', 'must be >= 0 (0: config.learning_rate)')
        if opts.sampler not in sampling.SAMPLERS:
            bad('sampler', f'must be one of {sampling.SAMPLERS}')
        if opts.critic_init not in ('policy', 'random'):
            bad('critic_init', "must be 'policy' or 'random'")
        if opts.start_from not in ('best', 'last'):
            bad('start_from', "must be 'best' or 'last'")
        if opts.init_from and int(config.train_steps) > 0:
            bad('init_from', 'needs config.train_steps = 0 (stage 2 only)')
        if opts.reward_from not in ('auto', 'constant', 'rating'):
            bad('reward_from', "must be 'auto', 'constant' or 'rating'")
        if opts.rating_map not in ('linear', 'binary'):
            bad('rating_map', "must be 'linear' or 'binary'")
        if not math.isfinite(float(opts.rating_threshold)):
            bad('rating_threshold', 'must be a finite number')
        if not math.isfinite(float(opts.reward)):
            bad('reward', 'must be a finite number')

    def reward_setting(self, config, ds):
        """('rating' | 'constant', lowest rating, highest rating) for this dataset; ConfigError
        naming the field when `crr.reward_from` asks for ratings the data does not have, or a
        'binary' threshold that no rating (or every rating) passes."""
        o, name = self.opts, f'config.{config.model}'
        rng = ds.rating_range()
        if o.reward_from == 'constant' or (o.reward_from == 'auto' and rng is None):
            return 'constant', None, None
        if rng is None:
            raise config_lib.ConfigError(
                f"{name}.reward_from: 'rating' needs a dataset with ratings, and "
                f"{ds.data_dir or 'this dataset'} has none (prepared from a format without a "
                "rating column, with --no-ratings, or before data_prep kept ratings); use 'auto' "
                "or 'constant', or prepare the data again from its MovieLens file")
        lo, hi = rng
        t = float(o.rating_threshold)
        if o.rating_map == 'binary' and not lo < t <= hi:
            raise config_lib.ConfigError(
                f'{name}.rating_threshold: the ratings run from {lo:g} to {hi:g}, so with a '
                f'threshold of {t:g} every reward would be {1 if t <= lo else 0}, got {t!r}')
        return 'rating', lo, hi

    def reward_description(self) -> str:
        """The reward, in words (the run's header line)."""
        o = self.opts
        scale = float(o.reward)
        times = '' if scale == 1 else f'{scale:g} x '
        if self.reward_source == 'constant':
            why = (' (the data has no ratings)' if o.reward_from == 'auto' else
                   " (reward_from 'constant': the data's ratings are not used)"
                   if self.ds.has_ratings else '')
            return f'reward {scale:g} an interaction{why}'
        lo, hi = self.rating_lo, self.rating_hi
        if o.rating_map == 'binary':
            return (f'reward from the rating: {times}(1 if rating >= '
                    f'{float(o.rating_threshold):g} else 0), ratings {lo:g}..{hi:g}')
        return (f'reward from the rating: {times}linear, rating {lo:g}..{hi:g} -> 0..1')

    @classmethod
    def resumable_changes(cls, config, resumable):
        # the CRR phase starts after train_steps: only it may be extended on resume
        return (resumable - {'train_steps'}) | {f'{config.get("model", "crr")}.crr_steps'}

    # -- state and phases ----------------------------------------------------------------------
    def init_critic(self, rng):
        seq = jnp.zeros((2, self.L), jnp.int32)
        return self.critic.init({'params': rng, 'dropout': rng}, seq, False)['params']

    def init_state(self, rng):
        state = super().init_state(rng)
        c_rng = jax.random.fold_in(rng, 7)
        critic = self.init_critic(c_rng)
        target = self.init_critic(c_rng)
        return dict(state, critic=critic, critic_target=target,
                    critic_opt_state=self.critic_tx.init(critic))

    def phases(self, mesh):
        (pre,) = super().phases(mesh)
        crr = Phase('crr', int(self.opts.crr_steps), self.crr_step, enter=self._enter_crr,
                    entered_key='crr_from', examples_per_step=self.batch_size,
                    epoch_examples=self.epoch_examples(),
                    validate_on_entry=bool(self.opts.start_competes))
        return [Phase('pretrain', pre.steps, pre.step_fn, examples_per_step=pre.examples_per_step,
                      epoch_examples=pre.epoch_examples), crr]

    def _enter_crr(self, state, ctx):
        """The policy that starts CRR (the kept pretrained one, or the last), a fresh policy
        optimizer, the critic (encoder copied from that policy) and Q' = Q; selection restarts
        (with `start_competes`, from the validation of this policy)."""
        ck, sh, P = ctx.checkpointer, ctx.shardings, int(self.config.train_steps)
        if self.opts.start_from == 'best' and P > 0 and ck.best_step() is not None:
            params, _ = ck.restore_best(ctx.abstract['params'])
            src = f'this run, step {ck.best_step()} (best validation {self.config.select_by})'
        elif P == 0 and self.opts.init_from:
            params = self.load_init_from(ctx.abstract['params'])
            src = f'{self.opts.init_from} (its kept parameters)'
        else:
            params = state['params']
            src = f'this run, step {ctx.step}' + (' (untrained: no pretraining)' if P == 0 else '')
        copy = self.opts.critic_init == 'policy'

        def critic_of(params, critic):
            return dict(critic, encoder=params) if copy else critic
        critic = jax.jit(critic_of, out_shardings=sh['critic'])(params, state['critic'])
        target = jax.jit(critic_of, out_shardings=sh['critic_target'])(params, state['critic'])
        c_opt = jax.jit(self.critic_tx.init, out_shardings=sh['critic_opt_state'])(critic)
        p_opt = jax.jit(self.policy_tx.init, out_shardings=sh['opt_state'])(params)
        meta = {'best_score': -math.inf, 'best_step': -1, 'crr_from': src,
                'pretrain_best': {k: ctx.meta.get(k) for k in ('best_score', 'best_step')}}
        ctx.log(f'CRR phase: policy from {src}; critic encoder '
                f'{"copied from it" if copy else "random"}, target = critic; '
                f'{int(self.opts.crr_steps)} CRR steps')
        return dict(state, params=params, opt_state=p_opt, critic=critic, critic_target=target,
                    critic_opt_state=c_opt), meta

    def load_init_from(self, abstract_params):
        """The kept policy of the run folder `crr.init_from` (a finished gpt or crr run of main.py
        on the same data with the same network: methods/init_from.py), placed as
        `abstract_params`."""
        return init_from_lib.load(f'{self.config.model}.init_from', self.opts.init_from, self.config,
                                  self.ds, abstract_params,
                                  type(self).generator_network(self.config.to_dict()),
                                  f'model/{self.config.model}.train_len')

    def describe(self):
        o = self.opts
        return (f'CRR-Transformer: {int(self.config.train_steps)} pretraining steps (next-item '
                f'cross-entropy, windows of {self.train_len} items), then {int(o.crr_steps)} CRR '
                f'steps (gamma {self.gamma:g}, beta {float(o.beta):g}, m {int(o.num_samples)}, '
                f'clip {float(o.weight_clip):g}, tau {float(o.tau):g}, '
                f'{self.reward_description()}); K-list: {self.config.decode.strategy}')

    # -- stage 2 -------------------------------------------------------------------------------
    def policy_logits(self, params, seq, users, key=None, train=False):
        return self.score_all(params, self.encode(params, seq, users, key=key, train=train))

    def q_values(self, critic, seq, key=None, train=False):
        return self.critic.apply({'params': critic}, seq, train,
                                 rngs={'dropout': key} if train else None)

    def transitions(self, data, key):
        """One batch of transitions: (users [B], seq [B, W + 1] (s_i = seq[:, :i+1]), actions [B,
        W], reward [B, W], done [B, W], mask [B, W]). reward[:, i] belongs to the action
        actions[:, i] = t_{i+1}: with ratings, the map of that interaction's rating; 0 where
        masked."""
        W, o = self.train_len, self.opts
        if self.reward_source == 'rating':
            users, inputs, targets, rated = data_lib.sample_user_sequences_rated(
                data, key, self.batch_size, W)
        else:
            users, inputs, targets = data_lib.sample_user_sequences(data, key, self.batch_size, W)
        seq = self.constrain(jnp.concatenate([inputs, targets[:, -1:]], axis=1))
        actions = self.constrain(targets)
        mask = actions > 0
        if self.reward_source == 'rating':
            r = rating_reward(self.constrain(rated), o.rating_map, self.rating_lo,
                              self.rating_hi, float(o.rating_threshold))
            reward = float(o.reward) * jnp.where(mask, r, 0.0)
        else:
            reward = float(o.reward) * mask.astype(jnp.float32)
        done = jnp.zeros(actions.shape, jnp.float32)
        if self.opts.terminal_at_end:
            done = done.at[:, -1].set(1.0)
        return users, seq, actions, reward, done, mask

    def crr_step(self, state, data):
        o, W = self.opts, self.train_len
        key = jax.random.fold_in(state['rng'], state['step'])
        k_batch, k_samp, k_pdrop, k_cdrop = jax.random.split(key, 4)
        users, seq, actions, reward, done, mask = self.transitions(data, k_batch)
        m = mask.astype(jnp.float32)
        n = jnp.maximum(jnp.sum(m), 1.0)

        # no-gradient quantities: pi and Q without dropout, Q' for the TD target
        logits = jax.lax.stop_gradient(self.policy_logits(state['params'], seq, users))
        q_now = jax.lax.stop_gradient(self.q_values(state['critic'], seq))[:, :W]
        q_next = jax.lax.stop_gradient(self.q_values(state['critic_target'], seq))[:, 1:]
        y = td_target(reward, done, q_next, logits[:, 1:], self.gamma)

        # critic: one step on the squared TD error
        def critic_loss(cp):
            q = self.q_values(cp, seq, key=k_cdrop, train=True)[:, :W]
            err = gather_items(q, actions) - y
            return jnp.sum(jnp.square(err) * m) / n
        c_loss, c_grads = jax.value_and_grad(critic_loss)(state['critic'])
        critic, c_opt = optim.apply(self.critic_tx, c_grads, state['critic_opt_state'],
                                    state['critic'])
        target = soft_update(state['critic_target'], critic, float(o.tau))

        # policy: advantage from m sampled actions, exponential weights, weighted regression
        logp_now = item_log_probs(logits[:, :W])                               # [B, W, V]
        if o.sampler == 'gumbel':
            sampled = jax.random.categorical(k_samp, logp_now, axis=-1,
                                             shape=(int(o.num_samples),) + actions.shape)
        else:                                                                   # [m, B, W]
            sampled = jnp.moveaxis(sampling.from_logits(k_samp, logp_now, int(o.num_samples)), -1, 0)
        q_sa = gather_items(q_now, actions)
        q_s = jnp.take_along_axis(q_now[None], sampled[..., None], axis=-1)[..., 0]
        adv = advantage(q_sa, q_s)
        w = crr_weights(adv, float(o.beta), float(o.weight_clip))

        def loss_fn(p):
            lg = self.policy_logits(p, seq[:, :W], users, key=k_pdrop, train=True)
            s, cnt = policy_loss(lg, actions, w, mask)
            return s / jnp.maximum(cnt, 1.0), (s, cnt)
        (_, (s, cnt)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
        params, opt_state = optim.apply(self.policy_tx, grads, state['opt_state'], state['params'])

        adv_mean = jnp.sum(adv * m) / n
        nll = -gather_items(item_log_probs(logits[:, :W]), actions)
        new = dict(state, step=state['step'] + 1, params=params, opt_state=opt_state,
                   critic=critic, critic_target=target, critic_opt_state=c_opt)
        return new, dict(
            loss_sum=s, tokens=cnt, grad_norm=optim.global_norm(grads),
            critic_loss=c_loss, critic_grad_norm=optim.global_norm(c_grads),
            q_data=jnp.sum(q_sa * m) / n, td_target=jnp.sum(y * m) / n,
            reward=jnp.sum(reward * m) / n,
            adv_mean=adv_mean, adv_std=jnp.sqrt(jnp.sum(jnp.square(adv - adv_mean) * m) / n),
            weight_mean=jnp.sum(w * m) / n,
            clip_frac=jnp.sum((adv / float(o.beta) >= math.log(float(o.weight_clip))) * m) / n,
            nll=jnp.sum(nll * m) / n)

    def console(self, phase, m):
        keys = (('loss', 'grad_norm') if phase == 'pretrain' else
                ('loss', 'nll', 'critic_loss', 'q_data', 'adv_std', 'weight_mean'))
        return ' '.join(f'{k} {m[k]:.4f}' for k in keys if k in m)


METHODS = {'crr': CRR}
