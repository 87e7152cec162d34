"""The AOS4Rec training steps (Sec. 4.3): seq2seq (MLE or oracular), critic, and SSRGAN rounds.

Every function here builds a PURE step ``step(state, data) -> (state, metrics)`` that the
trainer jits once with the state's shardings and donates. The state is one dict:

  step              int32, the schedule position (all phases count on it)
  params, opt_state the generator (actor) and its optimizer state
  rng               the run key; every draw is ``fold_in(rng, step)`` (then ``fold_in`` per sub-step)
  critic, critic_opt_state   the critic D and its optimizer (only when adversarial training is on)

Phases (``schedule``): [0, P) seq2seq steps (MLE, or oracular learning when
``config.aos4rec.oracle``; P = ``config.train_steps``), then, when ``config.aos4rec.adversarial``:
[P, P + C) critic pretraining on data and samples of the (fixed) generator, then
[P + C, P + C + G) SSRGAN rounds, each ``g_steps`` generator updates (Eq. 4) followed by
``d_steps`` critic updates (Eq. 7 + Eq. 8 + the Lipschitz term, ``critic.py``).

Sampling (Sec. 4.3, Gumbel noise): one policy, P_G at ``config.aos4rec.temperature`` (tau), for
the three things drawn from or scored under it: the generated lists y^ (Gumbel-max,
``decoding.sample(method='gumbel')``, or the same distribution by inverse CDF,
``aos4rec.list_sampler``), Eq. 4's log-probabilities (log softmax(logits / tau) over
the allowed items, dropout off) and Eq. 8's c successors (c independent draws,
``aos4rec.sample_next_items``). No item twice in a list.

One banning rule: where the dataset's profile bans history items, training bans what evaluation
bans, the user's WHOLE history before the window's target (items[offsets[u] : offsets[u] + i] of
the packed data on the device, ``data.history_ban_mask``, the function evaluation uses), not only
the L items of the window: in the oracle's beams, the generated lists and the successors.
``Steps(max_history=...)`` is the static bound of that history (the method passes the longest
train part; without it, e.g. in unit tests without a dataset, the last L items).

Held-out users for the critic (``aos4rec.critic_holdout`` f > 0; ``Steps(window_cums=...)``):
the seq2seq phase draws its windows from the users outside a fixed seeded draw of round(f U) users
(``data.holdout_users``), the critic and the SSRGAN generator from those users only. A generator
fit by MLE reproduces the targets of the windows it was fit on, so there a real list is no less
likely under it than its own samples, and a critic trained on those windows learns the opposite of
what holds on new users (docs/aos4rec.md, "Held-out users for the critic").

Measuring the critic: with ``critic_eval`` (an ``EvalSet`` of held-out validation users, the
method passes ``config.aos4rec.critic_eval_users`` of them), the critic and SSRGAN steps also
return, at every validation step of their phase (a multiple of ``eval_every`` and the phase's
last step), ``aos4rec.critic_separation`` on those users (their validation histories and targets,
generated lists drawn with a fixed key, their whole history banned as in evaluation): metrics
``val_wasserstein``, ``val_auc``, ``val_auc_paired``, ``val_adv_mean``, ``val_adv_std``,
``val_auc_nll`` and ``val_auc_nll_paired`` (the generator's own list NLL as the judge, a
reference: ``list_nll``) and ``val_count`` (1 at such
a step, 0 elsewhere; the method's ``summarize`` averages the others over it). Computed under
``lax.cond``: the other steps do not pay for it.

The stopping rule of critic pretraining (``aos4rec.critic_patience`` > 0, with held-out users):
the trainer runs phases of fixed length, so the critic phase keeps ``critic_pretrain_steps`` steps
as its cap, and the rule lives in the state: ``critic_watch`` (``aos4rec.critic_watch_init``)
records every val_auc (or val_auc_paired: aos4rec.critic_auc) measured in the phase (at its validation steps, and every
``aos4rec.critic_eval_every`` steps); the measurement that ends ``critic_patience`` of them in a
row without beating the best by ``critic_min_delta`` sets ``stopped`` (``aos4rec.critic_plateau``),
and from the next step on the critic step is a no-op under ``lax.cond`` (no update, no
measurement; only the step counter moves). A resumed run restores the record with the state, so
it stops where an uninterrupted one does. Off (patience 0): the state has no ``critic_watch`` and
the critic step is the one it always was.
"""
from __future__ import annotations

import copy

import numpy as np
import jax
import jax.numpy as jnp
import optax

from aos4rec_jax import aos4rec
from aos4rec_jax import critic as critic_lib
from aos4rec_jax import data as data_lib
from aos4rec_jax import decoding
from aos4rec_jax import optim
from aos4rec_jax import seq2seq
from aos4rec_jax import softmax_xent

PHASES = ('seq2seq', 'critic', 'gan')


def schedule(config) -> tuple[int, int, int]:
    """(P, C, G): seq2seq steps, critic pretraining steps, SSRGAN rounds of this run."""
    a = config.aos4rec
    if not a.adversarial:
        return int(config.train_steps), 0, 0
    return int(config.train_steps), int(a.critic_pretrain_steps), int(a.gan_steps)


def phase_of(step: int, config) -> str:
    """The phase that the update taking the state from `step` to `step + 1` belongs to."""
    p, c, _ = schedule(config)
    return 'seq2seq' if step < p else ('critic' if step < p + c else 'gan')


def window_ban_mask(history: jax.Array, vocab_size: int) -> jax.Array:
    """bool [B, V]: the items of each training window's L-item history (padding 0 excluded).
    Not the training rule (that is ``history_ban``: the whole history, as evaluation bans)."""
    b = history.shape[0]
    mask = jnp.zeros((b, vocab_size), bool).at[jnp.arange(b)[:, None], history].set(True)
    return mask.at[:, 0].set(False)


def window_positions(data, key: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """(users [B], positions i [B]) of the windows ``data.sample_windows(data, key, B, ...)``
    draws with the same key: the same draw, repeated (a test holds the two equal), so the window
    at position i of user u has target items[offsets[u] + i ...] and whole history
    items[offsets[u] : offsets[u] + i]."""
    w = jax.random.randint(key, (batch_size,), 0, data.window_cum[-1], dtype=jnp.int32)
    user = jnp.searchsorted(data.window_cum, w, side='right') - 1
    return user.astype(jnp.int32), (1 + w - data.window_cum[user]).astype(jnp.int32)


def history_ban(data, users: jax.Array, positions: jax.Array, bound: int,
                vocab_size: int) -> jax.Array:
    """bool [B, V]: the items of each window's whole history, items[offsets[u] : offsets[u] + i]
    (the rule evaluation applies, through the same ``data.history_ban_mask``), read from the
    packed data on the device. ``bound`` (static) keeps at most the last `bound` of them."""
    n = jnp.minimum(positions, bound)
    start = data.offsets[users] + positions - n
    return data_lib.history_ban_mask(data.items, start, n, int(bound), vocab_size)


def allowed_items(generated: jax.Array, vocab_size: int, banned=None) -> jax.Array:
    """bool [B, T, V]: the items the generator could draw at each position of `generated` [B, T]:
    not padding, not banned, not already drawn at an earlier position."""
    seen = jax.nn.one_hot(generated, vocab_size, dtype=jnp.int32)
    allowed = (jnp.cumsum(seen, axis=1) - seen) == 0
    allowed = allowed & (jnp.arange(vocab_size) != decoding.PAD_ID)[None, None, :]
    if banned is not None:
        allowed = allowed & ~banned[:, None, :]
    return allowed


def policy_log_probs(model, params, history, seq, banned, info, temperature: float):
    """(log P_G(y_t | x, y_1:t-1) [B, T] under the policy the lists are sampled from:
    softmax(logits / temperature) over the allowed items (``allowed_items``), dropout off; the raw
    logits [B, T, V]). SSRGAN's Eq. 4 and SeqGAN's REINFORCE score their sampled lists with it."""
    logits = model.apply({'params': params}, history, seq2seq.decoder_inputs(seq, info.bos_id),
                         train=False)
    allowed = allowed_items(seq, info.vocab_size, banned)
    scaled = logits.astype(jnp.float32) / temperature
    return -softmax_xent.nll(jnp.where(allowed, scaled, -1e30), seq), logits


def auc_key(config) -> str:
    """The metric that the stopping rule, aos4rec.critic_keep_best and the bar read
    (aos4rec.critic_auc): 'val_auc' (pooled over all pairs of users) or 'val_auc_paired'."""
    return {'pooled': 'val_auc', 'paired': 'val_auc_paired'}[
        str(config.aos4rec.get('critic_auc', 'pooled'))]


def make_critic_optimizer(config) -> optax.GradientTransformation:
    """Adam(d_learning_rate, b1 = 0.5, b2 = 0.9), the WGAN-GP recipe's momentum settings. With
    ``aos4rec.critic_frozen``, the parameters it names get zero updates (optax.multi_transform:
    Adam keeps no moments for them); without it, plain Adam, the state runs always had."""
    adam = optax.adam(float(config.aos4rec.d_learning_rate), b1=0.5, b2=0.9)
    patterns = critic_lib.frozen_patterns(config)
    if not patterns:
        return adam

    def labels(params):
        def label(f):
            return 'frozen' if f else 'train'
        return jax.tree_util.tree_map(label, critic_lib.frozen_mask(params, patterns))
    return optax.multi_transform({'train': adam, 'frozen': optax.set_to_zero()}, labels)


def make_mle_step(model, tx, info, batch_size: int, bsharding, chunk: int = 0):
    """The pure MLE train step: sample a batch on device, one optimizer update. chunk:
    config.loss_chunk (``seq2seq.mle_loss``)."""
    L, T, bos = info.history_len, info.target_len, info.bos_id

    def train_step(state, data):
        key = jax.random.fold_in(state['rng'], state['step'])
        k_batch, k_drop = jax.random.split(key)
        batch = data_lib.sample_windows(data, k_batch, batch_size, L, T)
        batch = jax.lax.with_sharding_constraint(batch, bsharding)
        dec_in = seq2seq.decoder_inputs(batch.target, bos)

        def loss_fn(p):
            s, n = seq2seq.mle_loss(p, model, batch.history, batch.target, dec_in, k_drop, train=True,
                                    chunk=chunk)
            return s / jnp.maximum(n, 1.0), (s, n)

        (_, (s, n)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
        params, opt_state = optim.apply(tx, grads, state['opt_state'], state['params'])
        new_state = dict(state, step=state['step'] + 1, params=params, opt_state=opt_state)
        return new_state, dict(loss_sum=s, tokens=n, grad_norm=optim.global_norm(grads))

    return train_step


class Steps:
    """The step functions of one run (see the module docstring). Built once per run."""

    def __init__(self, config, model, critic, info, batch_size: int, bsharding,
                 max_history: int | None = None, critic_eval=None, window_cums=None):
        """max_history: static bound of a training window's whole history (the longest train
        part); None: the window's L items. critic_eval: a ``data.EvalSet`` of validation users
        on which the critic's separation is measured (None: not measured); module docstring.
        window_cums: None (every phase draws from every user's windows) or {'seq2seq': [U + 1],
        'critic': [U + 1]}, the window_cum each part draws from (aos4rec.critic_holdout:
        ``data.windows_of_users``); 'critic' serves the critic and the SSRGAN generator."""
        # A snapshot: the steps are traced later (at their first call), and a caller that goes on
        # to change its config for another run must not change what these steps compute.
        config = copy.deepcopy(config)
        self.config, self.model, self.critic, self.info = config, model, critic, info
        self.a = config.aos4rec
        self.batch_size, self.bsharding = batch_size, bsharding
        self.mle_tx = optim.make_optimizer(config)
        self.g_tx = optim.make_optimizer(config, float(self.a.g_learning_rate))
        self.d_tx = make_critic_optimizer(config)
        self.L, self.T = info.history_len, info.target_len
        self.ban_bound = max(int(max_history or info.history_len), 1)
        self.temperature = float(self.a.temperature)
        # how y^ is drawn (aos4rec.list_sampler): Gumbel-max, or one uniform in the inverse CDF
        # ('categorical' of decoding.sample): the same distribution
        self.list_method = ('gumbel' if str(self.a.get('list_sampler', 'gumbel')) == 'gumbel'
                            else 'categorical')
        self.successor_sampler = str(self.a.get('successor_sampler', 'gumbel'))   # Eq. 8's draws
        # the AUC the stopping rule, critic_keep_best and the bar read (aos4rec.critic_auc)
        self.auc_key = auc_key(config)
        self.loss_chunk = int(config.loss_chunk)
        self.window_cums = None
        self.seq2seq_windows = int(info.num_windows)        # an epoch of the seq2seq phase
        if window_cums is not None:
            self.window_cums = {k: np.asarray(v, np.int32) for k, v in window_cums.items()}
            self.seq2seq_windows = int(self.window_cums['seq2seq'][-1])
        self.val = None
        self.stopping = False       # the stopping rule of critic pretraining (aos4rec.critic_patience)
        if critic is not None and critic_eval is not None and len(critic_eval) > 0:
            # small host arrays (users x (L + T + 2) ints), constants of the step
            self.val = dict(history=critic_eval.history, target=critic_eval.target,
                            hist_start=critic_eval.hist_start, hist_len=critic_eval.hist_len,
                            bound=max(int(critic_eval.hist_len.max()), 1))
            self.stopping = int(self.a.critic_patience) > 0

    # -- pieces -----------------------------------------------------------------------------------
    def part(self, data, name: str):
        """The data a part of training draws windows from: `data` itself, or (with
        ``window_cums``) the same arrays with that part's window_cum (name 'seq2seq' or 'critic')."""
        if self.window_cums is None:
            return data
        return data.replace(window_cum=jnp.asarray(self.window_cums[name]))

    def batch(self, data, key):
        """(Batch of training windows, the ban of each window: bool [B, V] or None)."""
        b = data_lib.sample_windows(data, key, self.batch_size, self.L, self.T)
        b = jax.lax.with_sharding_constraint(b, self.bsharding)
        if not self.info.ban_history:
            return b, None
        users, positions = window_positions(data, key, self.batch_size)
        banned = history_ban(data, users, positions, self.ban_bound, self.info.vocab_size)
        return b, jax.lax.with_sharding_constraint(banned, self.bsharding)

    @jax.named_scope('generate_lists')    # a name in profiles (benchmarks/op_profile.py) only
    def generate(self, params, history, banned, key, successor_key=None):
        """y^ [B, T] drawn from G at the policy's temperature, by Gumbel-max or inverse CDF
        (``aos4rec.list_sampler``; no gradient). With
        ``successor_key``: (y^, successors [B, T, c]), Eq. 8's c successors of every prefix drawn
        in the same decoding pass from each step's distribution (``decoding.sample``'s
        ``num_successors``; ``aos4rec.successors_from_decode``)."""
        params = jax.lax.stop_gradient(params)
        state = self.model.apply({'params': params}, history, self.T,
                                 method=self.model.init_decode_state)
        extra = {} if successor_key is None else dict(
            num_successors=int(self.a.num_next), successor_rng=successor_key,
            successor_method=self.successor_sampler)
        out = decoding.sample(seq2seq.make_step_fn(self.model, params), state, key,
                              batch_size=history.shape[0], vocab_size=self.info.vocab_size,
                              length=self.T, bos_id=self.info.bos_id,
                              temperature=self.temperature, method=self.list_method,
                              banned=banned, ban_generated=True, **extra)
        if successor_key is None:
            return out.sequences[:, 0]
        return out.sequences[:, 0], out.successors[:, 0]

    def log_probs(self, params, history, seq, banned):
        """``policy_log_probs`` of this run's generator at its temperature."""
        return policy_log_probs(self.model, params, history, seq, banned, self.info,
                                self.temperature)

    # -- phase 1: seq2seq -------------------------------------------------------------------------
    def seq2seq_step(self, state, data):
        """One MLE (or oracular, Sec. 4.1) update. p uses epoch = step * batch / windows (the
        windows this phase draws from)."""
        data = self.part(data, 'seq2seq')
        if not self.a.oracle:
            return make_mle_step(self.model, self.mle_tx, self.info, self.batch_size,
                                 self.bsharding, self.loss_chunk)(state, data)
        key = jax.random.fold_in(state['rng'], state['step'])
        k_batch, k_loss = jax.random.split(key)
        b, banned = self.batch(data, k_batch)
        epoch = state['step'].astype(jnp.float32) * self.batch_size / self.seq2seq_windows
        p = aos4rec.mix_probability(epoch, float(self.a.mu))

        def loss_fn(params):
            s, n = aos4rec.oracle_loss(params, self.model, b.history, b.target, k_loss, p=p,
                                       bos_id=self.info.bos_id, vocab_size=self.info.vocab_size,
                                       beam_size=int(self.a.beam_size),
                                       banned=banned, train=True, chunk=self.loss_chunk)
            return s / jnp.maximum(n, 1.0), (s, n)

        (_, (s, n)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
        params, opt_state = optim.apply(self.mle_tx, grads, state['opt_state'], state['params'])
        new = dict(state, step=state['step'] + 1, params=params, opt_state=opt_state)
        return new, dict(loss_sum=s, tokens=n, grad_norm=optim.global_norm(grads), p=p)

    # -- the critic -------------------------------------------------------------------------------
    def critic_update(self, state, data, key):
        """One critic update: Eq. 7 + td_weight * Eq. 8 + the Lipschitz term (critic.py)."""
        k_batch, k_gen, k_next, k_gp = jax.random.split(key, 4)
        k_drop = jax.random.fold_in(key, 4)            # the critic's dropout (critic_dropout > 0)
        b, banned = self.batch(self.part(data, 'critic'), k_batch)
        mask = b.target > 0
        if bool(self.a.get('successors_from_decode', False)):
            # Eq. 8's successors drawn while y^ is decoded, from the same step distributions
            # (no teacher-forced pass of G over y^: the same distribution, other draws)
            fake, succ = self.generate(state['params'], b.history, banned, k_gen, k_next)
        else:
            fake = self.generate(state['params'], b.history, banned, k_gen)
            _, g_logits = self.log_probs(jax.lax.stop_gradient(state['params']), b.history, fake,
                                         banned)
            succ = aos4rec.sample_next_items(k_next, jax.lax.stop_gradient(g_logits),
                                             int(self.a.num_next), banned=banned, generated=fake,
                                             temperature=self.temperature,
                                             sampler=self.successor_sampler)
        # a position with no allowed item (tiny vocabularies only): the empty slots repeat y^_t
        succ = jnp.where(succ > 0, succ, fake[..., None])
        a = self.a
        # the critic's dropout (aos4rec.critic_dropout) acts in its own updates only
        train = float(a.critic_dropout) > 0
        drop = (lambda i: {'dropout': jax.random.fold_in(k_drop, i)}) if train else (lambda i: None)

        # aos4rec.critic_encode_once: the real, fake and penalty passes decode against one
        # encoding of the history (the same function; without dropout only, where the passes'
        # encodings are equal; XLA sums the encoder's gradients in another order)
        once = bool(a.get('critic_encode_once', False)) and not train

        def loss_fn(cp):
            enc = self.critic.apply({'params': cp}, b.history, method=self.critic.encode) if once else None
            d_real, _ = self.critic.apply({'params': cp}, b.history, b.target, None, train, enc,
                                          rngs=drop(0))
            d_fake, d_next = self.critic.apply({'params': cp}, b.history, fake, succ, train, enc,
                                               rngs=drop(1))
            w = aos4rec.critic_loss_eq7(d_real, d_fake, mask)
            td = aos4rec.td0_loss_eq8(d_fake, d_next, mask)
            # gp_weight 0: no penalty term at all, the same program as lipschitz='none' (a
            # penalty computed and multiplied by 0 adds exact zeros, but XLA may then sum the
            # other gradients in another order: a last-bit difference)
            gp = (critic_lib.gradient_penalty(self.critic, cp, b.history, b.target, fake, mask,
                                              k_gp, jax.random.fold_in(k_drop, 2) if train else None,
                                              enc)
                  if a.lipschitz == 'gp' and float(a.gp_weight) > 0 else jnp.zeros(()))
            total = w + a.td_weight * td + a.gp_weight * gp
            return total, dict(critic_loss=w, wasserstein=-w, td_loss=td, gp=gp,
                               d_real=jnp.mean(d_real[:, 1:]), d_fake=jnp.mean(d_fake[:, 1:]))

        (_, m), grads = jax.value_and_grad(jax.named_scope('critic_loss')(loss_fn),
                                           has_aux=True)(state['critic'])
        cp, c_opt = optim.apply(self.d_tx, grads, state['critic_opt_state'], state['critic'])
        if a.lipschitz == 'clip':       # the trained parameters only (aos4rec.critic_frozen)
            frozen = critic_lib.frozen_mask(cp, critic_lib.frozen_patterns(self.config))
            cp = jax.tree_util.tree_map(
                lambda x, f: x if f else jnp.clip(x, -a.clip_value, a.clip_value), cp, frozen)
        m['critic_grad_norm'] = optim.global_norm(grads)
        return dict(state, critic=cp, critic_opt_state=c_opt), m

    def critic_step(self, state, data):
        """Critic pretraining: one critic update against the fixed generator. With the stopping
        rule (``stopping``), see ``critic_step_with_rule``."""
        if self.stopping:
            return self.critic_step_with_rule(state, data)
        key = jax.random.fold_in(state['rng'], state['step'])
        state, m = self.critic_update(state, data, key)
        state = dict(state, step=state['step'] + 1)
        return state, self.with_separation(state, data, m)

    def critic_step_with_rule(self, state, data):
        """Critic pretraining under the stopping rule (aos4rec.critic_patience > 0). The state's
        ``critic_watch`` (``aos4rec.critic_watch_init``) records the val_auc measurements; once it
        says stopped, the step is a no-op (``lax.cond``: no update, no measurement; the step
        counter still advances, so the phase keeps its fixed length, critic_pretrain_steps being
        the cap). Otherwise: one update as ``critic_step``, then, at a measurement, the plateau
        test ``aos4rec.critic_plateau``; with ``critic_best`` in the state
        (aos4rec.critic_keep_best), a measurement that improves copies the critic and its
        optimizer state there. Metrics: the update's (zeros on an idle step),
        ``critic_active`` (1 on a step that updated), ``critic_stop_step`` (the step the rule
        stopped at, on that step only; 0 elsewhere), the separation and ``val_auc_best``."""
        a = self.a
        key = jax.random.fold_in(state['rng'], state['step'])
        stopped = state['critic_watch']['stopped'] > 0

        def update(s):
            return self.critic_update(s, data, key)

        shapes = jax.eval_shape(update, state)[1]

        def idle(s):
            return s, jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)

        state, m = jax.lax.cond(stopped, idle, update, state)
        state = dict(state, step=state['step'] + 1)
        m = self.with_separation(state, data, m, skip=stopped)
        watch = state['critic_watch']
        measured = m['val_count'] > 0
        new = aos4rec.critic_plateau(watch, m[self.auc_key], state['step'], int(a.critic_patience),
                                     float(a.critic_min_delta))
        new = jax.tree_util.tree_map(lambda x, y: jnp.where(measured, x, y), new, watch)
        if 'critic_best' in state:     # aos4rec.critic_keep_best: copy the critic that improved
            improved = measured & (new['best_step'] != watch['best_step'])
            best = jax.lax.cond(
                improved,
                lambda s: dict(critic=s['critic'], critic_opt_state=s['critic_opt_state']),
                lambda s: s['critic_best'], state)
            state = dict(state, critic_best=best)
        stop_now = (new['stopped'] > 0) & ~stopped
        m = dict(m, critic_active=(~stopped).astype(jnp.float32),
                 critic_stop_step=jnp.where(stop_now, state['step'], 0).astype(jnp.float32),
                 val_auc_best=jnp.where(measured, new['best_auc'], 0.0).astype(jnp.float32))
        return dict(state, critic_watch=new), m

    # -- measuring the critic ---------------------------------------------------------------------
    SEPARATION_KEYS = ('val_wasserstein', 'val_auc', 'val_auc_paired', 'val_adv_mean', 'val_adv_std',
                       'val_auc_nll', 'val_auc_nll_paired')
    MEASURE_KEY = 2**31 - 1          # fold_in(rng, this): the fixed key of the measurement's lists

    def is_validation_step(self, step):
        """True (traced bool) where the state reaches a validation step of the critic or SSRGAN
        phase: a multiple of eval_every, or the last step of either phase; in the critic phase
        also a multiple of aos4rec.critic_eval_every (> 0)."""
        P, C, G = schedule(self.config)
        hit = (step == P + C) | (step == P + C + G)
        if int(self.config.eval_every) > 0:
            hit = hit | (step % int(self.config.eval_every) == 0)
        ce = int(self.a.get('critic_eval_every', 0))
        if ce > 0:
            hit = hit | ((step > P) & (step <= P + C) & (step % ce == 0))
        return hit

    def critic_separation(self, params, critic_params, data, key):
        """``aos4rec.critic_separation`` on the held-out validation users (``self.val``): their
        validation histories and targets against lists the generator draws for them (policy
        temperature, whole history banned as in evaluation), critic and generator without
        dropout. Returns the metrics named ``SEPARATION_KEYS``."""
        v = self.val
        history, target = jnp.asarray(v['history']), jnp.asarray(v['target'])
        banned = None
        if self.info.ban_history:
            banned = data_lib.history_ban_mask(data.items, jnp.asarray(v['hist_start']),
                                               jnp.asarray(v['hist_len']), v['bound'],
                                               self.info.vocab_size)
        fake = self.generate(params, history, banned, key)
        cp = jax.lax.stop_gradient(critic_params)
        d_real, _ = self.critic.apply({'params': cp}, history, target)
        d_fake, _ = self.critic.apply({'params': cp}, history, fake)
        sep = aos4rec.critic_separation(d_real, d_fake, target > 0, gamma=float(self.a.gamma))
        out = {f'val_{k}': sep[k] for k in ('wasserstein', 'auc', 'auc_paired', 'adv_mean', 'adv_std')}
        # the reference judge: the generator's own per-item NLL of a list (softmax of logits /
        # temperature, no ban, so that real and generated lists are scored alike); a list G finds
        # unlikely counts as real. Its AUC is what a critic that knew only G's likelihood reaches.
        nll_real, nll_fake = self.list_nll(params, history, target), self.list_nll(params, history, fake)
        nll = aos4rec.critic_separation(nll_real, nll_fake, target > 0)
        out['val_auc_nll'], out['val_auc_nll_paired'] = nll['auc'], nll['auc_paired']
        return out

    def list_nll(self, params, history, seq):
        """[B, T + 1]: 0, then -log P_G(y_t | x, y_1:t-1) at temperature, unbanned (the layout of
        critic scores, so that ``aos4rec.critic_separation`` reads it as one)."""
        logits = self.model.apply({'params': jax.lax.stop_gradient(params)}, history,
                                  seq2seq.decoder_inputs(seq, self.info.bos_id), train=False)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32) / self.temperature, axis=-1)
        nll = -jnp.take_along_axis(logp, seq[..., None].astype(jnp.int32), axis=-1)[..., 0]
        return jnp.concatenate([jnp.zeros_like(nll[:, :1]), nll], axis=1)

    def separation_of(self, state, data):
        """``critic_separation`` of the state's generator and critic, with the measurement's fixed
        key (``fold_in(rng, MEASURE_KEY)``): what every measurement reports, and what the method
        reads when the SSRGAN phase begins."""
        key = jax.random.fold_in(state['rng'], self.MEASURE_KEY)
        return self.critic_separation(state['params'], state['critic'], data, key)

    def with_separation(self, state, data, m, skip=None):
        """m plus the critic's separation (and val_count = 1) at a validation step, zeros (and
        val_count = 0) elsewhere or where `skip` (a traced bool) holds; m unchanged without
        held-out users."""
        if self.val is None:
            return m
        when = self.is_validation_step(state['step'])
        if skip is not None:
            when = when & ~skip

        def measure():
            return dict(self.separation_of(state, data), val_count=jnp.ones((), jnp.float32))

        def nothing():
            return {k: jnp.zeros((), jnp.float32) for k in self.SEPARATION_KEYS + ('val_count',)}

        return {**m, **jax.lax.cond(when, measure, nothing)}

    # -- the generator (actor) --------------------------------------------------------------------
    def generator_update(self, state, data, key):
        """One actor update: ``gan_adv_weight`` (1) times Eq. 4's loss, with A_t = gamma D(x, y^_1:t)
        - D(x, y^_1:t-1), plus ``gan_mle_weight`` (0 in the paper) times the MLE loss of the real
        continuation. Weights 0 and 1 give the "MLE only" control: the same schedule, updates and
        model selection, with no signal from the critic."""
        k_batch, k_gen, k_drop = jax.random.split(key, 3)
        b, banned = self.batch(self.part(data, 'critic'), k_batch)
        mask = b.target > 0
        fake = self.generate(state['params'], b.history, banned, k_gen)
        d_fake, _ = self.critic.apply({'params': state['critic']}, b.history, fake)
        a = self.a

        def loss_fn(params):
            logp, _ = self.log_probs(params, b.history, fake, banned)
            adv_loss = aos4rec.generator_loss_eq4(logp, d_fake, mask, gamma=float(a.gamma))
            total = float(a.gan_adv_weight) * adv_loss
            if a.gan_mle_weight > 0:
                dec_in = seq2seq.decoder_inputs(b.target, self.info.bos_id)
                s, n = seq2seq.mle_loss(params, self.model, b.history, b.target, dec_in, k_drop,
                                        chunk=self.loss_chunk)
                total = total + a.gan_mle_weight * s / jnp.maximum(n, 1.0)
            return total, (adv_loss, logp)

        (_, (adv_loss, logp)), grads = jax.value_and_grad(
            jax.named_scope('generator_loss')(loss_fn), has_aux=True)(state['params'])
        params, opt_state = optim.apply(self.g_tx, grads, state['opt_state'], state['params'])
        d = d_fake[:, 1:] * float(a.gamma) - d_fake[:, :-1]
        mf = mask.astype(jnp.float32)
        m = dict(generator_loss=adv_loss, grad_norm=optim.global_norm(grads),
                 advantage=jnp.sum(d * mf) / jnp.maximum(jnp.sum(mf), 1.0),
                 sample_nll=-jnp.sum(logp * mf) / jnp.maximum(jnp.sum(mf), 1.0))
        return dict(state, params=params, opt_state=opt_state), m

    def gan_round(self, state, data):
        """One SSRGAN round: g_steps generator updates, then d_steps critic updates (lax.scan)."""
        key = jax.random.fold_in(state['rng'], state['step'])
        g_keys = jax.random.split(jax.random.fold_in(key, 0), int(self.a.g_steps))
        d_keys = jax.random.split(jax.random.fold_in(key, 1), int(self.a.d_steps))

        def g_body(s, k):
            return self.generator_update(s, data, k)

        def d_body(s, k):
            return self.critic_update(s, data, k)

        state, gm = jax.lax.scan(g_body, state, g_keys)
        state, dm = jax.lax.scan(d_body, state, d_keys)
        m = {k: jnp.mean(v) for k, v in {**gm, **dm}.items()}
        state = dict(state, step=state['step'] + 1)
        return state, self.with_separation(state, data, m)
