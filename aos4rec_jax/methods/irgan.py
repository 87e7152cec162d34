"""IRGAN, item recommendation (Wang et al., SIGIR 2017, "IRGAN: A Minimax Game for Unifying
Generative and Discriminative Information Retrieval Models"; the authors' code: geek-ai/irgan,
item_recommendation/cf_gan.py, gen_model.py, dis_model.py). docs/irgan.md has the equations, the
deviations from that code and the measured runs.

Networks. A generator G and a discriminator D, both models/bpr.py's matrix factorisation
(user factors w_u, item factors h_i, item bias b_i): f(u, i) = <w_u, h_i> + b_i. The train
state's `params` holds both, {'generator': G, 'discriminator': D}; the K-list is the top-K of
G's scores (`irgan.evaluate = 'discriminator'`: D's) through methods/next_item.py's path.

  p_G(i | u) = softmax_i f_G(u, i) over the items 1..N (padding never; nothing else banned)

Schedule (one state, one step counter):
  'pretrain'  irgan.pretrain_steps (-1: config.train_steps)   BPR steps on G: methods/bpr.py's
              loss and sampling (BPR.loss); D mirrors G (D = G after every step), so both are
              the BPR parameters throughout the phase.
  'gan'       irgan.gan_steps rounds, each d_steps D updates then g_steps G updates (one
              lax.scan each; the authors' code also trains D first). Entering it sets G and D to
              the kept pretrained parameters (`start_from` 'best': the best validation step;
              'last'), gives each a fresh optimizer, and starts model selection again; with
              `start_competes` those parameters are validated on entry and kept unless a
              round validates better (Phase.validate_on_entry).

D update (dis_model.py's pre_loss): B (user, item) train interactions drawn uniformly (the
positives, label 1) and for each one item drawn from p_G(. | u) at temperature `d_temperature`
(label 0; the code: 0.2): sigmoid cross-entropy, plus `d_reg` x 0.5 (||w_u||^2 + ||h_i||^2 +
b_i^2) on every example's factors, averaged over the 2B examples.

G update (gen_model.py's gan_loss, cf_gan.py's importance sampling): B users drawn uniformly, S =
`g_samples` items each from p_n = (1 - lambda) p_G(. | u) + lambda * (uniform over the user's train
interactions), lambda = `sample_lambda` (the code: 0.2); reward r = 2 (sigmoid(f_D(u, i)) - 0.5)
(the code; `reward = 'log1pexp'`: log(1 + exp(f_D)), the paper's text), weighted by p_G / p_n:

  L_G = -1/(B S) sum_{u, s} stop_grad(r_us p_G(i_us | u) / p_n(i_us | u)) log p_G(i_us | u)
        + g_reg x 0.5 (||w_u||^2 + ||h_i||^2 + b_i^2) averaged over the samples (the code: 0)

Every draw is vectorised over the batch and the full item softmax (inverse CDF,
`sampling.from_weights`: jax.random.categorical's Gumbel-max cost 1 s a G update on LastFM); every
step is pure and draws from fold_in(state['rng'], state['step']).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from aos4rec_jax import config as config_lib
from aos4rec_jax import data as data_lib
from aos4rec_jax import optim
from aos4rec_jax import sampling
from aos4rec_jax import sharding as shard_lib
from aos4rec_jax.methods.base import Phase
from aos4rec_jax.methods.bpr import BPR

NEG_INF = -1e30
REWARDS = ('sigmoid', 'log1pexp')
NETS = ('generator', 'discriminator')


# ------------------------------------------------------------------------------ the pieces
def user_vectors(net, params, users):
    """w_u [B, D] float32 of known users (models/bpr.py's encode; no dropout)."""
    dummy = jnp.zeros((users.shape[0], 1), jnp.int32)
    return net.apply({'params': params}, dummy, users, False,
                     method=net.encode).astype(jnp.float32)


def item_logits(net, params, users):
    """f(u, .) [B, V] float32 over every item; index 0 (padding) is NEG_INF (never drawn)."""
    h = user_vectors(net, params, users)
    logits = net.apply({'params': params}, h, method=net.score_all).astype(jnp.float32)
    return logits.at[:, 0].set(NEG_INF)


def pair_logits(net, params, users, items):
    """f(u, i) [B, n] for users [B], items [B, n], and each pair's 0.5 (||w_u||^2 + ||h_i||^2 +
    b_i^2) [B, n] (tf.nn.l2_loss of the factors one example looks up)."""
    w = user_vectors(net, params, users)                                         # [B, D]
    h = net.apply({'params': params}, items, method=net.item_vectors).astype(jnp.float32)
    b = net.apply({'params': params}, items, method=net.item_bias).astype(jnp.float32)
    logits = jnp.einsum('bd,bnd->bn', w, h) + b
    l2 = 0.5 * (jnp.sum(jnp.square(w), -1)[:, None] + jnp.sum(jnp.square(h), -1) + jnp.square(b))
    return logits, l2


def reward_of(d_logits, kind: str = 'sigmoid'):
    """The generator's reward from D's logits: 2 (sigmoid(f) - 0.5) (the authors' code) or
    log(1 + exp(f)) (the paper's text, Eq. 5 with D = sigmoid(f))."""
    if kind == 'sigmoid':
        return 2.0 * (jax.nn.sigmoid(d_logits) - 0.5)
    if kind == 'log1pexp':
        return jax.nn.softplus(d_logits)
    raise ValueError(f'unknown reward {kind!r}; known: {REWARDS}')


def d_loss(pos_logits, neg_logits, pos_l2, neg_l2, d_reg: float):
    """Mean over the 2B examples of the sigmoid cross-entropy (label 1 for the positives, 0 for
    G's items) plus d_reg x each example's l2 term."""
    ce = jnp.concatenate([jax.nn.softplus(-pos_logits).ravel(), jax.nn.softplus(neg_logits).ravel()])
    l2 = jnp.concatenate([pos_l2.ravel(), neg_l2.ravel()])
    return jnp.mean(ce) + d_reg * jnp.mean(l2)


def policy_gradient_loss(logp, samples, weights):
    """REINFORCE: -mean(stop_grad(weights) * log p(samples)); logp [B, V], samples and weights
    [B, S]."""
    lp = jnp.take_along_axis(logp, samples, axis=-1)
    return -jnp.mean(jax.lax.stop_gradient(weights) * lp)


def g_loss(net, params, users, samples, weights, g_reg: float = 0.0):
    """L_G of G's parameters: the policy-gradient loss over p_G(. | u) (full softmax) plus g_reg x
    the samples' l2 terms (mean)."""
    logp = jax.nn.log_softmax(item_logits(net, params, users), axis=-1)
    loss = policy_gradient_loss(logp, samples, weights)
    if g_reg > 0:
        _, l2 = pair_logits(net, params, users, samples)
        loss = loss + g_reg * jnp.mean(l2)
    return loss


def sample_items(key, logits, num: int):
    """`num` items a row from softmax(logits) [B, V] (with replacement): [B, num] int32.

    The full softmax, drawn by inverse CDF (`sampling.from_weights`): jax.random.categorical's
    Gumbel-max needs V uniforms a draw (32 draws for 128 users over LastFM's 3,647 items took 1 s
    a step on a 2-core CPU; this takes milliseconds)."""
    return sampling.from_weights(key, jax.nn.softmax(logits.astype(jnp.float32), axis=-1), num)


def user_train_items(data, users, max_train: int):
    """(items [B, M] of each user's train part, 0-padded, M = max_train static; n_train [B])."""
    n = data.n_train[users]
    pos = jnp.arange(max_train)[None, :]
    idx = data.offsets[users][:, None] + jnp.minimum(pos, jnp.maximum(n[:, None] - 1, 0))
    return jnp.where(pos < n[:, None], data.items[idx], 0), n


def mixture_probs(logp, train_items, n_train, lam: float):
    """p_n [B, V] = (1 - lam) p_G + lam (uniform over the row's train interactions: an item
    repeated in the train part counts as often as it appears). logp [B, V] = log p_G;
    train_items [B, M] (0-padded), n_train [B]."""
    p = jnp.exp(logp)
    if lam <= 0:
        return p
    B, V = logp.shape
    counts = jnp.zeros((B, V), jnp.float32).at[jnp.arange(B)[:, None], train_items].add(
        (train_items > 0).astype(jnp.float32))
    return (1.0 - lam) * p + lam * counts.at[:, 0].set(0.0) / jnp.maximum(n_train, 1)[:, None]


def mixture_samples(key, logp, train_items, n_train, num: int, lam: float):
    """(`num` items a row drawn from p_n (`mixture_probs`) [B, num], p_n [B, V]): the authors'
    np.random.choice(items, 2 |pos|, p=pn), vectorised."""
    pn = mixture_probs(logp, train_items, n_train, lam)
    return sampling.from_weights(key, pn, num), pn


# ------------------------------------------------------------------------------ the method
class IRGAN(BPR):
    """BPR pretraining, then IRGAN's minimax game (the module docstring)."""

    OPTIONS = dict(BPR.OPTIONS, **{
        'pretrain_steps': -1,      # BPR steps of phase 'pretrain' (-1: config.train_steps)
        'gan_steps': 200,          # rounds of phase 'gan'
        'd_steps': 1,              # D updates a round
        'g_steps': 1,              # G updates a round
        'd_batch_size': 0,         # positives a D update (and as many G items); 0: batch_size
        'd_temperature': 0.2,      # temperature of p_G when drawing D's negatives (code: 0.2)
        'g_samples': 32,           # items drawn a user in a G update (code: 2 |train items|)
        'sample_lambda': 0.2,      # importance-sampling mix with the user's train items (code 0.2)
        'reward': 'sigmoid',       # sigmoid: 2 (sigma(f_D) - 0.5) (code) | log1pexp (paper text)
        'd_reg': 0.2,              # L2 of D per example (the code's lamda 0.1/16 on 32 examples)
        'g_reg': 0.0,              # L2 of G per sample (the code: 0)
        'optimizer': 'adam',       # of both players in phase 'gan': adam | sgd (the code: sgd)
        'g_learning_rate': 1e-3,   # G's rate in phase 'gan' (the code: sgd 0.001)
        'd_learning_rate': 1e-3,   # D's rate (the code: sgd 0.001)
        'start_from': 'best',      # G and D at the switch: 'best' (kept BPR step) | 'last'
        'evaluate': 'generator',   # whose scores make the K-list: generator | discriminator
        'start_competes': False,   # the players that start phase 'gan' are validated first and
                                   # kept unless a round validates better (False: selection
                                   # restarts with the first round)
    })

    # runs made before start_competes existed restarted model selection with the first round
    OPTIONS_ADDED_LATER = {'start_competes': False}

    def __init__(self, config, ds):
        super().__init__(config, ds)
        o = self.opts
        self.eval_net = str(o.evaluate)
        self.g_tx = self._gan_tx(float(o.g_learning_rate))
        self.d_tx = self._gan_tx(float(o.d_learning_rate))
        self.d_batch = int(o.d_batch_size) or self.batch_size
        self.max_train = max(int(ds.prepared.n_train.max()), 1)

    def _gan_tx(self, lr):
        return optax.sgd(lr) if self.opts.optimizer == 'sgd' else optax.adam(lr)

    # -- config --------------------------------------------------------------------------------
    @classmethod
    def validate_options(cls, opts, config):
        super().validate_options(opts, config)
        name = f'config.{config.model}'

        def bad(field, why):
            raise config_lib.ConfigError(f'{name}.{field}: {why}, got {opts[field]!r}')
        if int(opts.pretrain_steps) < -1:
            bad('pretrain_steps', 'must be >= 0 (or -1: config.train_steps)')
        if int(opts.gan_steps) < 0:
            bad('gan_steps', 'must be >= 0')
        for f in ('d_steps', 'g_steps', 'g_samples'):
            if int(opts[f]) < 1:
                bad(f, 'must be >= 1')
        if int(opts.d_batch_size) < 0:
            bad('d_batch_size', 'must be >= 0 (0: config.batch_size)')
        for f in ('d_temperature', 'g_learning_rate', 'd_learning_rate'):
            if not float(opts[f]) > 0:
                bad(f, 'must be > 0')
        if not 0 <= float(opts.sample_lambda) < 1:
            bad('sample_lambda', 'must be in [0, 1)')
        for f in ('d_reg', 'g_reg'):
            if float(opts[f]) < 0:
                bad(f, 'must be >= 0')
        if opts.reward not in REWARDS:
            bad('reward', f'must be one of {REWARDS}')
        if opts.optimizer not in ('adam', 'sgd'):
            bad('optimizer', "must be 'adam' or 'sgd'")
        if opts.start_from not in ('best', 'last'):
            bad('start_from', "must be 'best' or 'last'")
        if opts.evaluate not in NETS:
            bad('evaluate', f'must be one of {NETS}')

    @classmethod
    def resumable_changes(cls, config, resumable):
        # the game starts after the pretraining: only its length may change on resume
        model = config.get('model', 'irgan')
        return (resumable - {'train_steps'}) | {f'{model}.gan_steps'}

    # -- state and phases ----------------------------------------------------------------------
    def pretrain_steps(self) -> int:
        p = int(self.opts.pretrain_steps)
        return int(self.config.train_steps) if p < 0 else p

    def init_state(self, rng):
        # the generator starts as BPR's run does (same key split), so the pretraining is BPR's run
        p_rng, s_rng = jax.random.split(rng)
        g = self.init_params(p_rng)
        d = self.init_params(p_rng)          # equal values, its own buffers
        return dict(step=jnp.zeros((), jnp.int32), params={'generator': g, 'discriminator': d},
                    opt_state=self.tx.init(g), g_opt_state=self.g_tx.init(g),
                    d_opt_state=self.d_tx.init(d), rng=s_rng)

    def phases(self, mesh):
        shard_lib.check_batch_size(self.batch_size, mesh)
        shard_lib.check_batch_size(self.d_batch, mesh)
        self.bsharding = shard_lib.batch_sharding(mesh)
        return [Phase('pretrain', self.pretrain_steps(), self.pretrain_step,
                      examples_per_step=self.batch_size, epoch_examples=self.epoch_examples()),
                Phase('gan', int(self.opts.gan_steps), self.gan_round, enter=self._enter_gan,
                      entered_key='irgan_from', validate_on_entry=bool(self.opts.start_competes))]

    def pretrain_step(self, state, data):
        """One BPR step on G (methods/bpr.py's loss, NextItemMethod's update); D = G after it."""
        key = jax.random.fold_in(state['rng'], state['step'])

        def loss_fn(p):
            s, n, extra = self.loss(p, data, key)
            return s / jnp.maximum(n, 1.0), (s, n, extra)

        g = state['params']['generator']
        (_, (s, n, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(g)
        g, opt_state = optim.apply(self.tx, grads, state['opt_state'], g)
        new = dict(state, step=state['step'] + 1, params={'generator': g, 'discriminator': g},
                   opt_state=opt_state)
        return new, dict(loss_sum=s, tokens=n, grad_norm=optim.global_norm(grads), **extra)

    def _enter_gan(self, state, ctx):
        """G and D := the kept (or last) pretrained parameters, fresh optimizers; selection
        restarts (with `start_competes`, from the validation of these parameters)."""
        ck, sh, P = ctx.checkpointer, ctx.shardings, self.pretrain_steps()
        if self.opts.start_from == 'best' and P > 0 and ck.best_step() is not None:
            params, _ = ck.restore_best(ctx.abstract['params'])
            src = f'this run, step {ck.best_step()} (best validation {self.config.select_by})'
        else:
            params = state['params']
            src = f'this run, step {ctx.step}' + (' (untrained: no pretraining)' if P == 0 else '')
        both = jax.jit(lambda g: {'generator': g, 'discriminator': g},
                       out_shardings=sh['params'])(params['generator'])
        g_opt = jax.jit(self.g_tx.init, out_shardings=sh['g_opt_state'])(both['generator'])
        d_opt = jax.jit(self.d_tx.init, out_shardings=sh['d_opt_state'])(both['discriminator'])
        meta = {'best_score': -math.inf, 'best_step': -1, 'irgan_from': src,
                'pretrain_best': {k: ctx.meta.get(k) for k in ('best_score', 'best_step')}}
        ctx.log(f'IRGAN: generator and discriminator set to the BPR parameters of {src}; '
                f'{int(self.opts.gan_steps)} rounds')
        return dict(state, params=both, g_opt_state=g_opt, d_opt_state=d_opt), meta

    # -- the game ------------------------------------------------------------------------------
    def logits(self, params, users):
        return item_logits(self.model, params, users)

    def d_update(self, state, data, key):
        """One D step: B train pairs (label 1), one item of p_G at d_temperature each (label 0)."""
        k_batch, k_neg = jax.random.split(key)
        users, pos = data_lib.sample_interactions(data, k_batch, self.d_batch)
        users, pos = self.constrain(users), self.constrain(pos)
        g = jax.lax.stop_gradient(state['params']['generator'])
        neg = sample_items(k_neg, self.logits(g, users) / float(self.opts.d_temperature), 1)
        d_reg = float(self.opts.d_reg)

        def loss_fn(dp):
            logits, l2 = pair_logits(self.model, dp, users, jnp.concatenate([pos[:, None], neg], 1))
            loss = d_loss(logits[:, 0], logits[:, 1], l2[:, 0], l2[:, 1], d_reg)
            return loss, logits

        dp = state['params']['discriminator']
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(dp)
        dp, d_opt = optim.apply(self.d_tx, grads, state['d_opt_state'], dp)
        acc = 0.5 * (jnp.mean((logits[:, 0] > 0).astype(jnp.float32))
                     + jnp.mean((logits[:, 1] < 0).astype(jnp.float32)))
        m = dict(d_loss=loss, d_grad_norm=optim.global_norm(grads), d_acc=acc,
                 d_real=jnp.mean(jax.nn.sigmoid(logits[:, 0])),
                 d_fake=jnp.mean(jax.nn.sigmoid(logits[:, 1])),
                 neg_is_pos=jnp.mean((neg[:, 0] == pos).astype(jnp.float32)))
        params = dict(state['params'], discriminator=dp)
        return dict(state, params=params, d_opt_state=d_opt), m

    def sample_users(self, data, key, n):
        """n users drawn uniformly among those with a train item."""
        ok = (data.n_train > 0).astype(jnp.float32)
        return jax.random.choice(key, ok.shape[0], (n,), p=ok / jnp.sum(ok)).astype(jnp.int32)

    def g_batch(self, state, data, key):
        """(users [B], samples [B, S], weights [B, S] = reward x p_G / p_n, rewards [B, S],
        importance weights [B, S]) of one G step; no gradient."""
        o = self.opts
        k_users, k_samp = jax.random.split(key)
        users = self.constrain(self.sample_users(data, k_users, self.batch_size))
        g = jax.lax.stop_gradient(state['params']['generator'])
        dp = jax.lax.stop_gradient(state['params']['discriminator'])
        logp = jax.nn.log_softmax(self.logits(g, users), axis=-1)
        train_items, n = user_train_items(data, users, self.max_train)
        samples, pn = mixture_samples(k_samp, logp, train_items, n, int(o.g_samples),
                                      float(o.sample_lambda))
        p = jnp.exp(jnp.take_along_axis(logp, samples, axis=1))
        iw = p / jnp.maximum(jnp.take_along_axis(pn, samples, axis=1), 1e-30)
        d_logits, _ = pair_logits(self.model, dp, users, samples)
        r = reward_of(d_logits, str(o.reward))
        return users, samples, r * iw, r, iw

    def g_update(self, state, data, key):
        """One REINFORCE step of G on the importance-weighted rewards of D."""
        users, samples, w, r, iw = self.g_batch(state, data, key)
        g = state['params']['generator']
        loss, grads = jax.value_and_grad(
            lambda p: g_loss(self.model, p, users, samples, w, float(self.opts.g_reg)))(g)
        g, g_opt = optim.apply(self.g_tx, grads, state['g_opt_state'], g)
        params = dict(state['params'], generator=g)
        m = dict(g_loss=loss, grad_norm=optim.global_norm(grads), reward=jnp.mean(r),
                 is_weight=jnp.mean(iw))
        return dict(state, params=params, g_opt_state=g_opt), m

    def gan_round(self, state, data):
        """d_steps D updates, then g_steps G updates (a lax.scan each)."""
        key = jax.random.fold_in(state['rng'], state['step'])
        d_keys = jax.random.split(jax.random.fold_in(key, 0), int(self.opts.d_steps))
        g_keys = jax.random.split(jax.random.fold_in(key, 1), int(self.opts.g_steps))
        state, dm = jax.lax.scan(lambda s, k: self.d_update(s, data, k), state, d_keys)
        state, gm = jax.lax.scan(lambda s, k: self.g_update(s, data, k), state, g_keys)
        m = {k: jnp.mean(v) for k, v in {**dm, **gm}.items()}
        return dict(state, step=state['step'] + 1), m

    # -- evaluation ----------------------------------------------------------------------------
    def scores(self, params, history, users):
        """The chosen player's next-item scores (irgan.evaluate)."""
        return super().scores(params[self.eval_net], history, users)

    def describe(self):
        o = self.opts
        return (f'IRGAN: {self.pretrain_steps()} BPR steps, then {int(o.gan_steps)} rounds of '
                f'{int(o.d_steps)} D + {int(o.g_steps)} G updates ({o.optimizer}, lr G '
                f'{float(o.g_learning_rate):g} D {float(o.d_learning_rate):g}); D negatives from '
                f'p_G at T={float(o.d_temperature):g}; G: {int(o.g_samples)} items a user, '
                f'lambda {float(o.sample_lambda):g}, reward {o.reward}; K-list: {self.eval_net} '
                f'{self.config.decode.strategy}')

    def console(self, phase, m):
        keys = (('loss', 'grad_norm') if phase == 'pretrain' else
                ('g_loss', 'reward', 'is_weight', 'd_loss', 'd_acc', 'd_real', 'd_fake'))
        return ' '.join(f'{k} {m[k]:.4f}' for k in keys if k in m)


METHODS = {'irgan': IRGAN}
