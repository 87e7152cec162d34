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

Sampling (Sec. 4.3, Gumbel noise): generated lists y^ are drawn with Gumbel-max
(``decoding.sample(method='gumbel')``, temperature ``config.aos4rec.temperature``), no item twice,
history items banned when the dataset's profile bans them; the c successors of Eq. 8 by
Gumbel-top-k (``aos4rec.sample_next_items``). The generator's log-probabilities in Eq. 4 are those
of the distribution it sampled from: dropout off, banned and earlier items masked out.
"""
from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import optax

from aos4rec_jax import aos4rec
from aos4rec_jax import critic as critic_lib
from aos4rec_jax import data as data_lib
from aos4rec_jax import decoding
from aos4rec_jax import optim
from aos4rec_jax import seq2seq

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
    """bool [B, V]: the items of each training window's history (padding 0 excluded)."""
    b = history.shape[0]
    mask = jnp.zeros((b, vocab_size), bool).at[jnp.arange(b)[:, None], history].set(True)
    return mask.at[:, 0].set(False)


def allowed_items(generated: jax.Array, vocab_size: int, banned=None) -> jax.Array:
    """bool [B, T, V]: the items the generator could draw at each position of `generated` [B, T]:
    not padding, not banned, not already drawn at an earlier position."""
    seen = jax.nn.one_hot(generated, vocab_size, dtype=jnp.int32)
    allowed = (jnp.cumsum(seen, axis=1) - seen) == 0
    allowed = allowed & (jnp.arange(vocab_size) != decoding.PAD_ID)[None, None, :]
    if banned is not None:
        allowed = allowed & ~banned[:, None, :]
    return allowed


def make_critic_optimizer(config) -> optax.GradientTransformation:
    """Adam(d_learning_rate, b1 = 0.5, b2 = 0.9), the WGAN-GP recipe's momentum settings."""
    return optax.adam(float(config.aos4rec.d_learning_rate), b1=0.5, b2=0.9)


def make_mle_step(model, tx, info, batch_size: int, bsharding):
    """The pure MLE train step: sample a batch on device, one optimizer update."""
    L, T, bos = info.history_len, info.target_len, info.bos_id

    def train_step(state, data):
        key = jax.random.fold_in(state['rng'], state['step'])
        k_batch, k_drop = jax.random.split(key)
        batch = data_lib.sample_windows(data, k_batch, batch_size, L, T)
        batch = jax.lax.with_sharding_constraint(batch, bsharding)
        dec_in = seq2seq.decoder_inputs(batch.target, bos)

        def loss_fn(p):
            s, n = seq2seq.mle_loss(p, model, batch.history, batch.target, dec_in, k_drop, train=True)
            return s / jnp.maximum(n, 1.0), (s, n)

        (_, (s, n)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
        params, opt_state = optim.apply(tx, grads, state['opt_state'], state['params'])
        new_state = dict(state, step=state['step'] + 1, params=params, opt_state=opt_state)
        return new_state, dict(loss_sum=s, tokens=n, grad_norm=optim.global_norm(grads))

    return train_step


class Steps:
    """The step functions of one run (see the module docstring). Built once per run."""

    def __init__(self, config, model, critic, info, batch_size: int, bsharding):
        # A snapshot: the steps are traced later (at their first call), and a caller that goes on
        # to change its config for another run must not change what these steps compute.
        config = copy.deepcopy(config)
        self.config, self.model, self.critic, self.info = config, model, critic, info
        self.a = config.aos4rec
        self.batch_size, self.bsharding = batch_size, bsharding
        self.mle_tx = seq2seq.make_optimizer(config)
        self.g_tx = seq2seq.make_optimizer(config, float(self.a.g_learning_rate))
        self.d_tx = make_critic_optimizer(config)
        self.L, self.T = info.history_len, info.target_len

    # -- pieces -----------------------------------------------------------------------------------
    def batch(self, data, key):
        b = data_lib.sample_windows(data, key, self.batch_size, self.L, self.T)
        return jax.lax.with_sharding_constraint(b, self.bsharding)

    def banned(self, history):
        if not self.info.ban_history:
            return None
        return window_ban_mask(history, self.info.vocab_size)

    def generate(self, params, history, banned, key):
        """y^ [B, T] drawn from G with Gumbel-max sampling (no gradient)."""
        params = jax.lax.stop_gradient(params)
        state = self.model.apply({'params': params}, history, self.T,
                                 method=self.model.init_decode_state)
        out = decoding.sample(seq2seq.make_step_fn(self.model, params), state, key,
                              batch_size=history.shape[0], vocab_size=self.info.vocab_size,
                              length=self.T, bos_id=self.info.bos_id,
                              temperature=float(self.a.temperature), method='gumbel',
                              banned=banned, ban_generated=True)
        return out.sequences[:, 0]

    def log_probs(self, params, history, seq, banned):
        """(log P_G(y_t | x, y_1:t-1) [B, T] under the allowed distribution, logits [B, T, V])."""
        logits = self.model.apply({'params': params}, history,
                                  seq2seq.decoder_inputs(seq, self.info.bos_id), train=False)
        allowed = allowed_items(seq, self.info.vocab_size, banned)
        logp = jax.nn.log_softmax(jnp.where(allowed, logits, -1e30), axis=-1)
        return jnp.take_along_axis(logp, seq[..., None], axis=-1)[..., 0], logits

    # -- phase 1: seq2seq -------------------------------------------------------------------------
    def seq2seq_step(self, state, data):
        """One MLE (or oracular, Sec. 4.1) update. p uses epoch = step * batch / windows."""
        if not self.a.oracle:
            return make_mle_step(self.model, self.mle_tx, self.info, self.batch_size,
                                 self.bsharding)(state, data)
        key = jax.random.fold_in(state['rng'], state['step'])
        k_batch, k_loss = jax.random.split(key)
        b = self.batch(data, k_batch)
        epoch = state['step'].astype(jnp.float32) * self.batch_size / self.info.num_windows
        p = aos4rec.mix_probability(epoch, float(self.a.mu))

        def loss_fn(params):
            s, n = aos4rec.oracle_loss(params, self.model, b.history, b.target, k_loss, p=p,
                                       bos_id=self.info.bos_id, vocab_size=self.info.vocab_size,
                                       beam_size=int(self.a.beam_size),
                                       banned=self.banned(b.history), train=True)
            return s / jnp.maximum(n, 1.0), (s, n)

        (_, (s, n)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
        params, opt_state = optim.apply(self.mle_tx, grads, state['opt_state'], state['params'])
        new = dict(state, step=state['step'] + 1, params=params, opt_state=opt_state)
        return new, dict(loss_sum=s, tokens=n, grad_norm=optim.global_norm(grads), p=p)

    # -- the critic -------------------------------------------------------------------------------
    def critic_update(self, state, data, key):
        """One critic update: Eq. 7 + td_weight * Eq. 8 + the Lipschitz term (critic.py)."""
        k_batch, k_gen, k_next, k_gp = jax.random.split(key, 4)
        b = self.batch(data, k_batch)
        banned = self.banned(b.history)
        mask = b.target > 0
        fake = self.generate(state['params'], b.history, banned, k_gen)
        _, g_logits = self.log_probs(jax.lax.stop_gradient(state['params']), b.history, fake, banned)
        succ = aos4rec.sample_next_items(k_next, jax.lax.stop_gradient(g_logits),
                                         int(self.a.num_next), banned=banned, generated=fake)
        # fewer than c allowed items (tiny vocabularies only): the empty slots repeat y^_t
        succ = jnp.where(succ > 0, succ, fake[..., None])
        a = self.a

        def loss_fn(cp):
            d_real, _ = self.critic.apply({'params': cp}, b.history, b.target)
            d_fake, d_next = self.critic.apply({'params': cp}, b.history, fake, succ)
            w = aos4rec.critic_loss_eq7(d_real, d_fake, mask)
            td = aos4rec.td0_loss_eq8(d_fake, d_next, mask)
            gp = (critic_lib.gradient_penalty(self.critic, cp, b.history, b.target, fake, mask,
                                              k_gp) if a.lipschitz == 'gp' else jnp.zeros(()))
            total = w + a.td_weight * td + a.gp_weight * gp
            return total, dict(critic_loss=w, wasserstein=-w, td_loss=td, gp=gp,
                               d_real=jnp.mean(d_real[:, 1:]), d_fake=jnp.mean(d_fake[:, 1:]))

        (_, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['critic'])
        cp, c_opt = optim.apply(self.d_tx, grads, state['critic_opt_state'], state['critic'])
        if a.lipschitz == 'clip':
            cp = jax.tree_util.tree_map(lambda x: jnp.clip(x, -a.clip_value, a.clip_value), cp)
        m['critic_grad_norm'] = optim.global_norm(grads)
        return dict(state, critic=cp, critic_opt_state=c_opt), m

    def critic_step(self, state, data):
        """Critic pretraining: one critic update against the fixed generator."""
        key = jax.random.fold_in(state['rng'], state['step'])
        state, m = self.critic_update(state, data, key)
        return dict(state, step=state['step'] + 1), m

    # -- the generator (actor) --------------------------------------------------------------------
    def generator_update(self, state, data, key):
        """One actor update: ``gan_adv_weight`` (1) times Eq. 4's loss, with A_t = gamma D(x, y^_1:t)
        - D(x, y^_1:t-1), plus ``gan_mle_weight`` (0 in the paper) times the MLE loss of the real
        continuation. Weights 0 and 1 give the "MLE only" control: the same schedule, updates and
        model selection, with no signal from the critic."""
        k_batch, k_gen, k_drop = jax.random.split(key, 3)
        b = self.batch(data, k_batch)
        banned = self.banned(b.history)
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
                s, n = seq2seq.mle_loss(params, self.model, b.history, b.target, dec_in, k_drop)
                total = total + a.gan_mle_weight * s / jnp.maximum(n, 1.0)
            return total, (adv_loss, logp)

        (_, (adv_loss, logp)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
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
        return dict(state, step=state['step'] + 1), m
