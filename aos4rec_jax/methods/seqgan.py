"""SeqGAN / RecGAN (Yu et al., AAAI-17; ../shared/seeds/003_*) on the seq2seq generator.

The generator is AOS4Rec's network (config.seqgan.generator: 'transformer' or 'gru', sized by
config.model_kwargs, built by seq2seq.build_model), read as a stochastic policy: P_G at
`temperature` over the allowed items (not padding, not banned, not already in the list). The
discriminator is SeqGAN's CNN with a highway layer (models/seqgan_disc.py), conditioned on the
history; it scores FINISHED lists, D = P(real).

Schedule (Algorithm 1), one state, one step counter:

  phase 'seq2seq'  config.train_steps              MLE pretraining of G (ssrgan.make_mle_step)
  phase 'disc'     seqgan.d_pretrain_steps          D updates: real windows vs fresh lists of G
  phase 'gan'      seqgan.gan_steps rounds          g_steps REINFORCE updates of G, then d_steps
                                                    D updates with fresh negatives (lax.scan each)

Entering 'disc' copies the generator kept by the MLE phase (best validation), or, with
`init_from` and train_steps 0, the generator another finished run kept (an MLE run of the same
network on the same data: methods/init_from.py, shared with AOS4Rec's `aos4rec.init_from`), gives
it a fresh optimizer at g_learning_rate and starts model selection again (as AOS4Rec's SSRGAN
phase does). A resumed run does not enter again: it goes on from its own checkpoint. With
`start_competes` (AOS4Rec's gan_start_competes) that generator is validated when the first round
starts (Phase.validate_on_entry on phase 'gan') and is kept unless a round validates better.

Reward (Eq. 4): for a sampled list y_1:T, Q_t = mean_n D(x, MC_n(y_1:t)) for t < T, where each
MC_n completes the prefix y_1:t with the roll-out policy, and Q_T = D(x, y_1:T). All (T - 1) * N
roll-outs of a batch are ONE `decoding.sample` call of B users x (T - 1) * N samples
(``mc_rewards``): sample j of user b (j = 0..(T-1)N-1) completes the prefix of length 1 + j // N;
the decoder forces the prefix items (`decoding.sample`'s per-row `prefix`), so the model's cache
holds the prefix and only the rest is drawn, while the step function stays the policy's own
(the decoding contract: it does not depend on the row count). The roll-out policy G_beta is the
generator at the start of the round (Algorithm 1, line 18: beta <- theta; `rollout_delay` 0), or
a delayed copy beta <- r beta + (1 - r) theta after each round (`rollout_delay` r > 0; SeqGAN's
code uses 0.8), kept in the state as `rollout_params`.

Generator loss (Eq. 7, REINFORCE): -(Q_t - b_t) log P_G(y_t | x, y_1:t-1), a per-user mean over
the valid target positions, then a mean over users; b_t = 0 (`baseline` 'none', the paper) or
the batch mean of Q_t ('mean'). D loss (Eq. 5): binary cross-entropy, real = the window's true
continuation, fake = a fresh list of G (the same padding as the real one).
"""
from __future__ import annotations

import copy
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aos4rec_jax import config as config_lib
from aos4rec_jax import data as data_lib
from aos4rec_jax import decoding
from aos4rec_jax import optim
from aos4rec_jax import sampling
from aos4rec_jax import seq2seq
from aos4rec_jax import sharding as shard_lib
from aos4rec_jax import ssrgan
from aos4rec_jax.methods import init_from as init_from_lib
from aos4rec_jax.methods.base import Method, Phase, checked_options
from aos4rec_jax.models import seqgan_disc

OPTIONS = {
    'generator': 'transformer',     # the seq2seq network of G (models/): transformer | gru
    'd_pretrain_steps': 100,        # D updates against the MLE-pretrained G (phase 'disc')
    'gan_steps': 100,               # adversarial rounds (phase 'gan')
    'g_steps': 1,                   # REINFORCE updates of G per round
    'd_steps': 5,                   # D updates per round, each on fresh real and generated lists
    'num_rollouts': 16,             # N: Monte Carlo roll-outs per prefix (paper: 16)
    'rollout_delay': 0.0,           # r: beta <- r beta + (1 - r) theta after each round
                                    # (0: the generator at the round's start, Algorithm 1)
    'baseline': 'none',             # none (paper) | mean: batch mean of Q_t subtracted
    'temperature': 1.0,             # the policy: softmax(logits / temperature)
    'g_learning_rate': 1e-4,        # G's Adam rate in the adversarial phase
    'd_learning_rate': 1e-4,        # D's Adam rate
    'd_embed_dim': 64,              # D's item embedding size
    'd_filters': seqgan_disc.SEQGAN_FILTERS,   # D's convolutions, WINDOW:KERNELS,...
    'd_dropout': 0.25,              # dropout before D's output layer (SeqGAN: keep 0.75)
    'mle_weight': 0.0,              # MLE loss of the true continuation added to G's updates
    'init_from': '',                # a finished run's workdir (with train_steps=0): its kept
                                    # generator starts the adversarial phases instead of this
                                    # run's MLE phase (methods/init_from.py)
    'start_competes': False,        # the generator that starts phase 'gan' is validated first
                                    # and kept unless a round validates better (False: model
                                    # selection restarts with the first round)
    'sampler': 'inverse_cdf',       # how the lists and roll-outs are drawn (the same policy):
                                    # inverse_cdf (decoding.sample's 'categorical') | gumbel
                                    # (Gumbel-max, V noise numbers a drawn item; runs before
                                    # 2026-12-06)
}
BASELINES = ('none', 'mean')
GENERATORS = ('transformer', 'gru')


def _generator_config(config):
    """config with `model` set to the generator's network (what seq2seq.build_model reads)."""
    c = copy.deepcopy(config)
    c.model = str(checked_options(config, 'seqgan', OPTIONS).generator)
    return c


def build_discriminator(opts, info) -> seqgan_disc.SeqGANDiscriminator:
    return seqgan_disc.SeqGANDiscriminator(seqgan_disc.DiscConfig(
        num_items=info.num_items, seq_len=info.target_len, embed_dim=int(opts.d_embed_dim),
        filters=seqgan_disc.parse_filters(opts.d_filters), dropout_rate=float(opts.d_dropout)))


def init_discriminator(disc, info, rng):
    h = jnp.zeros((2, info.history_len), jnp.int32)
    s = jnp.zeros((2, info.target_len), jnp.int32)
    return disc.init({'params': rng}, h, s)['params']


# ------------------------------------------------------------------------------ the pieces
def mc_rewards(step_fn, dec_state, score_fn, seq, mask, key, *, num_rollouts: int,
               vocab_size: int, bos_id: int, temperature: float, banned=None,
               method: str = 'gumbel'):
    """Q [B, T] of Eq. 4 for the lists `seq` [B, T]: Q_t (t = 1..T-1) the mean of `score_fn` over
    N roll-outs that complete seq[:, :t] with the policy of `step_fn` (decoding.sample at
    `temperature`, `banned` and already-listed items masked), Q_T = score_fn(seq).

    dec_state: the policy's decoding state for the B users (leading dim B; the decoding
    contract). score_fn(rows [R], lists [R, T]) -> [R] scores the R lists of users `rows`; lists
    are zeroed where `mask` [B, T] is False (the real list's padding) before scoring. One decoding
    call of B users x (T - 1) N samples: sample j of user b completes the prefix of length
    1 + j // N, which the decoder forces (`decoding.sample`'s `prefix`: a per-row input of the
    decoder, so `step_fn` is the policy's own and does not depend on the row count). `method`:
    decoding.sample's ('categorical' or 'gumbel': the same distribution, other draws).
    Returns (Q [B, T], the completed lists [B, T - 1, N, T])."""
    B, T = seq.shape
    N = int(num_rollouts)
    full = score_fn(jnp.arange(B), jnp.where(mask, seq, 0))
    if T == 1:
        return full[:, None], jnp.zeros((B, 0, N, T), seq.dtype)
    n = (T - 1) * N
    prefix_len = 1 + jnp.arange(n, dtype=jnp.int32) // N                        # [n]
    prefix = jnp.where(jnp.arange(T)[None, None, :] < prefix_len[None, :, None],
                       seq[:, None, :], 0)                                      # [B, n, T]
    out = decoding.sample(step_fn, dec_state, key, batch_size=B, vocab_size=vocab_size,
                          length=T, bos_id=bos_id, num_samples=n, temperature=temperature,
                          method=method, banned=banned, ban_generated=True, prefix=prefix)
    done = jnp.where(mask[:, None, :], out.sequences, 0)                     # [B, n, T]
    rows = jnp.repeat(jnp.arange(B), n)
    d = score_fn(rows, done.reshape(B * n, T)).reshape(B, T - 1, N)
    q = jnp.concatenate([jnp.mean(d, axis=-1), full[:, None]], axis=1)
    return q, done.reshape(B, T - 1, N, T)


def reinforce_loss(logp, q, mask, baseline: str = 'none'):
    """-(Q_t - b_t) log P(y_t): per-user mean over the valid positions, then mean over users.
    `q` is a constant (no gradient); b_t = 0 ('none') or the batch mean of Q_t ('mean')."""
    q = jax.lax.stop_gradient(q)
    mf = mask.astype(jnp.float32)
    if baseline == 'mean':
        q = q - jnp.sum(q * mf, axis=0, keepdims=True) / jnp.maximum(jnp.sum(mf, axis=0, keepdims=True), 1.0)
    per_user = -jnp.sum(q * logp * mf, axis=1) / jnp.maximum(jnp.sum(mf, axis=1), 1.0)
    return jnp.mean(per_user)


def bce_loss(logit_real, logit_fake):
    """Eq. 5: -log D(real) - log(1 - D(fake)), averaged over the 2B lists."""
    return 0.5 * (jnp.mean(jax.nn.softplus(-logit_real)) + jnp.mean(jax.nn.softplus(logit_fake)))


class SeqGANSteps:
    """The pure step functions of one run (module docstring). `disc_prob(dparams, history, seq)`
    is the reward function (P(real), no dropout); a test may replace it on the instance."""

    def __init__(self, config, model, disc, info, batch_size: int, bsharding,
                 max_history: int | None = None):
        config = copy.deepcopy(config)           # the steps are traced later: a snapshot
        self.config, self.model, self.disc, self.info = config, model, disc, info
        self.o = checked_options(config, 'seqgan', OPTIONS)
        self.batch_size, self.bsharding = batch_size, bsharding
        self.L, self.T = info.history_len, info.target_len
        self.ban_bound = max(int(max_history or info.history_len), 1)
        self.temperature = float(self.o.temperature)
        self.mle_tx = optim.make_optimizer(config)
        self.g_tx = optim.make_optimizer(config, float(self.o.g_learning_rate))
        self.d_tx = optax.adam(float(self.o.d_learning_rate))
        self.delay = float(self.o.rollout_delay)
        self.sample_method = 'gumbel' if self.o.sampler == 'gumbel' else 'categorical'
        self.loss_chunk = int(config.loss_chunk)
        self.mle_step = ssrgan.make_mle_step(model, self.mle_tx, info, batch_size, bsharding,
                                             self.loss_chunk)

    # -- shared pieces -----------------------------------------------------------------------
    def batch(self, data, key):
        """(training windows, their ban bool [B, V] or None): the AOS4Rec banning rule."""
        b = data_lib.sample_windows(data, key, self.batch_size, self.L, self.T)
        if self.bsharding is not None:
            b = jax.lax.with_sharding_constraint(b, self.bsharding)
        if not self.info.ban_history:
            return b, None
        users, positions = ssrgan.window_positions(data, key, self.batch_size)
        return b, ssrgan.history_ban(data, users, positions, self.ban_bound, self.info.vocab_size)

    def decode_state(self, params, history):
        return self.model.apply({'params': params}, history, self.T, method=self.model.init_decode_state)

    def generate(self, params, history, banned, key):
        """y [B, T] drawn from the policy at `temperature` (seqgan.sampler), no gradient."""
        params = jax.lax.stop_gradient(params)
        out = decoding.sample(seq2seq.make_step_fn(self.model, params), self.decode_state(params, history),
                              key, batch_size=history.shape[0], vocab_size=self.info.vocab_size,
                              length=self.T, bos_id=self.info.bos_id, temperature=self.temperature,
                              method=self.sample_method, banned=banned, ban_generated=True)
        return out.sequences[:, 0]

    def log_probs(self, params, history, seq, banned):
        """log P_G(y_t | x, y_1:t-1) [B, T] under the sampling policy (dropout off)."""
        return ssrgan.policy_log_probs(self.model, params, history, seq, banned, self.info,
                                       self.temperature)[0]

    def disc_prob(self, dparams, history, seq):
        return jax.nn.sigmoid(self.disc.apply({'params': dparams}, history, seq, False))

    def rewards(self, rollout_params, dparams, history, seq, mask, banned, key):
        """(Q [B, T], completed roll-outs): ``mc_rewards`` with the roll-out policy and D."""
        rollout_params = jax.lax.stop_gradient(rollout_params)
        dparams = jax.lax.stop_gradient(dparams)
        return mc_rewards(seq2seq.make_step_fn(self.model, rollout_params),
                          self.decode_state(rollout_params, history),
                          lambda rows, lists: self.disc_prob(dparams, history[rows], lists),
                          seq, mask, key, num_rollouts=int(self.o.num_rollouts),
                          vocab_size=self.info.vocab_size, bos_id=self.info.bos_id,
                          temperature=self.temperature, banned=banned, method=self.sample_method)

    # -- D ---------------------------------------------------------------------------------------
    def d_update(self, state, data, key):
        """One D update (Eq. 5) on B real windows and B fresh lists of the current G."""
        k_batch, k_gen, k_drop = jax.random.split(key, 3)
        b, banned = self.batch(data, k_batch)
        mask = b.target > 0
        fake = jnp.where(mask, self.generate(state['params'], b.history, banned, k_gen), 0)

        def loss_fn(dp):
            lr = self.disc.apply({'params': dp}, b.history, b.target, True,
                                 rngs={'dropout': jax.random.fold_in(k_drop, 0)})
            lf = self.disc.apply({'params': dp}, b.history, fake, True,
                                 rngs={'dropout': jax.random.fold_in(k_drop, 1)})
            acc = 0.5 * (jnp.mean((lr > 0).astype(jnp.float32)) + jnp.mean((lf < 0).astype(jnp.float32)))
            return bce_loss(lr, lf), dict(d_real=jnp.mean(jax.nn.sigmoid(lr)),
                                          d_fake=jnp.mean(jax.nn.sigmoid(lf)), d_acc=acc)

        (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['disc'])
        dp, d_opt = optim.apply(self.d_tx, grads, state['disc_opt_state'], state['disc'])
        m.update(d_loss=loss, d_grad_norm=optim.global_norm(grads))
        return dict(state, disc=dp, disc_opt_state=d_opt), m

    def disc_step(self, state, data):
        """Phase 'disc': one D update against the fixed (MLE-pretrained) generator."""
        key = jax.random.fold_in(state['rng'], state['step'])
        state, m = self.d_update(state, data, key)
        return dict(state, step=state['step'] + 1), m

    # -- G ---------------------------------------------------------------------------------------
    def g_update(self, state, data, key, rollout_params):
        """One REINFORCE update of G (Eq. 7 with the Q of Eq. 4)."""
        k_batch, k_gen, k_roll, k_drop = jax.random.split(key, 4)
        b, banned = self.batch(data, k_batch)
        mask = b.target > 0
        y = self.generate(state['params'], b.history, banned, k_gen)
        q, _ = self.rewards(rollout_params, state['disc'], b.history, y, mask, banned, k_roll)
        o = self.o

        def loss_fn(params):
            logp = self.log_probs(params, b.history, y, banned)
            pg = reinforce_loss(logp, q, mask, str(o.baseline))
            total = pg
            if float(o.mle_weight) > 0:
                s, n = seq2seq.mle_loss(params, self.model, b.history, b.target,
                                        seq2seq.decoder_inputs(b.target, self.info.bos_id), k_drop,
                                        chunk=self.loss_chunk)
                total = total + float(o.mle_weight) * s / jnp.maximum(n, 1.0)
            return total, (pg, logp)

        (_, (pg, logp)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
        params, opt_state = optim.apply(self.g_tx, grads, state['opt_state'], state['params'])
        mf = mask.astype(jnp.float32)
        cnt = jnp.maximum(jnp.sum(mf), 1.0)
        m = dict(g_loss=pg, grad_norm=optim.global_norm(grads), reward=jnp.sum(q * mf) / cnt,
                 reward_final=jnp.mean(q[:, -1]), sample_nll=-jnp.sum(logp * mf) / cnt)
        return dict(state, params=params, opt_state=opt_state), m

    def gan_round(self, state, data):
        """g_steps G updates, d_steps D updates (one lax.scan each), then the roll-out policy's
        update (rollout_delay > 0)."""
        key = jax.random.fold_in(state['rng'], state['step'])
        g_keys = jax.random.split(jax.random.fold_in(key, 0), int(self.o.g_steps))
        d_keys = jax.random.split(jax.random.fold_in(key, 1), int(self.o.d_steps))
        # beta: the delayed copy, or theta at the start of the round (Algorithm 1, line 18)
        beta = state['rollout_params'] if self.delay > 0 else state['params']
        state, gm = jax.lax.scan(lambda s, k: self.g_update(s, data, k, beta), state, g_keys)
        state, dm = jax.lax.scan(lambda s, k: self.d_update(s, data, k), state, d_keys)
        if self.delay > 0:
            r = self.delay
            state = dict(state, rollout_params=jax.tree_util.tree_map(
                lambda b_, t_: r * b_ + (1.0 - r) * t_, state['rollout_params'], state['params']))
        m = {k: jnp.mean(v) for k, v in {**gm, **dm}.items()}
        return dict(state, step=state['step'] + 1), m


class SeqGAN(Method):
    """SeqGAN / RecGAN on AOS4Rec's seq2seq generator (the module docstring)."""

    def __init__(self, config, ds):
        super().__init__(config, ds)
        self.o = checked_options(config, 'seqgan', OPTIONS)
        self.gen_config = _generator_config(config)
        self.model = seq2seq.build_model(self.gen_config, ds.info)
        self.disc = build_discriminator(self.o, ds.info)
        self.delay = float(self.o.rollout_delay)
        self._steps = None

    # -- config ----------------------------------------------------------------------------------
    @classmethod
    def validate_config(cls, config):
        o = checked_options(config, 'seqgan', OPTIONS)
        err = config_lib.ConfigError
        if o.generator not in GENERATORS:
            raise err(f'config.seqgan.generator: {o.generator!r} is not one of {GENERATORS}')
        for f in ('d_pretrain_steps', 'gan_steps'):
            if int(o[f]) < 0:
                raise err(f'config.seqgan.{f}: must be >= 0, got {o[f]}')
        for f in ('g_steps', 'd_steps', 'num_rollouts', 'd_embed_dim'):
            if int(o[f]) < 1:
                raise err(f'config.seqgan.{f}: must be >= 1, got {o[f]}')
        for f in ('temperature', 'g_learning_rate', 'd_learning_rate'):
            if not float(o[f]) > 0:
                raise err(f'config.seqgan.{f}: must be > 0, got {o[f]}')
        if not 0 <= float(o.rollout_delay) < 1:
            raise err(f'config.seqgan.rollout_delay: must be in [0, 1), got {o.rollout_delay}')
        if not 0 <= float(o.d_dropout) < 1:
            raise err(f'config.seqgan.d_dropout: must be in [0, 1), got {o.d_dropout}')
        if float(o.mle_weight) < 0:
            raise err(f'config.seqgan.mle_weight: must be >= 0, got {o.mle_weight}')
        if o.baseline not in BASELINES:
            raise err(f'config.seqgan.baseline: {o.baseline!r} is not one of {BASELINES}')
        if o.sampler not in sampling.SAMPLERS:
            raise err(f'config.seqgan.sampler: {o.sampler!r} is not one of {sampling.SAMPLERS}')
        try:
            seqgan_disc.parse_filters(o.d_filters)
        except ValueError as e:
            raise err(f'config.seqgan.d_filters: {e}') from None
        if o.init_from and int(config.train_steps) != 0:
            raise err(f'config.seqgan.init_from: the generator comes from {o.init_from}; set '
                      f'train_steps=0 (got {config.train_steps})')
        if config.decode.strategy == 'topk':
            raise err("config.decode.strategy: 'topk' ranks next-item scores; SeqGAN's seq2seq "
                      'generator generates its list: use beam, greedy, sample, gumbel, multi_rra or multi_ra')

    # runs made before init_from existed started from their own MLE phase; runs made before
    # start_competes existed restarted model selection with the first round
    OPTIONS_ADDED_LATER = {'init_from': '', 'start_competes': False, 'sampler': 'gumbel'}

    @classmethod
    def generator_network(cls, config: dict):
        return config.get('seqgan', {}).get('generator', OPTIONS['generator'])

    @classmethod
    def resumable_changes(cls, config: dict, resumable: set) -> set:
        # the phases follow train_steps and d_pretrain_steps: only the last one may be extended
        return (resumable - {'train_steps'}) | {'seqgan.gan_steps'}

    # -- state and phases ------------------------------------------------------------------------
    def steps(self, mesh) -> SeqGANSteps:
        if self._steps is None:
            shard_lib.check_batch_size(self.config.batch_size, mesh)
            max_history = int(max(1, self.ds.prepared.n_train.max() - 1))
            self._steps = SeqGANSteps(self.gen_config, self.model, self.disc, self.info,
                                      self.config.batch_size, shard_lib.batch_sharding(mesh),
                                      max_history=max_history)
        return self._steps

    def init_state(self, rng):
        tx = optim.make_optimizer(self.config)
        d_tx = optax.adam(float(self.o.d_learning_rate))
        p_rng, s_rng = jax.random.split(rng)
        params = seq2seq.init_params(self.model, self.info, p_rng)
        dp = init_discriminator(self.disc, self.info, jax.random.fold_in(p_rng, 1))
        state = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                     rng=s_rng, disc=dp, disc_opt_state=d_tx.init(dp))
        if self.delay > 0:
            # a computed copy: no buffer appears twice in the (donated) state
            state['rollout_params'] = jax.tree_util.tree_map(lambda x: x * 1.0 + 0.0, params)
        return state

    def schedule(self):
        return int(self.config.train_steps), int(self.o.d_pretrain_steps), int(self.o.gan_steps)

    def phases(self, mesh):
        st = self.steps(mesh)
        P, C, G = self.schedule()
        return [Phase('seq2seq', P, st.mle_step, examples_per_step=self.config.batch_size,
                      epoch_examples=self.info.num_windows),
                Phase('disc', C, st.disc_step, validate=False, enter=self._enter_adversarial,
                      entered_key='seqgan_from'),
                self._gan_phase(st, G)]

    def _gan_phase(self, st, G):
        """Phase 'gan'. With `start_competes` it validates its starting generator on entry, as
        AOS4Rec's gan_start_competes does: 'disc' (validate=False) cannot, and its updates leave
        G as entering 'disc' set it, so the first round's start is the state to validate. The
        trainer records the entry as `seqgan_gan_entered` (the key runs written before the
        trainer recorded entries hold). Off, the phase has no entry: what every run before did."""
        if not self.o.start_competes:
            return Phase('gan', G, st.gan_round)
        return Phase('gan', G, st.gan_round,
                     entered_key='seqgan_gan_entered', validate_on_entry=True)

    def _enter_adversarial(self, state, ctx):
        """G for the adversarial phases: the MLE phase's kept parameters (or init_from's), a
        fresh optimizer at g_learning_rate, the roll-out copy set to them; model selection
        starts again."""
        P, C, _ = self.schedule()
        ck = ctx.checkpointer
        if P > 0 and ck.best_step() is not None:
            params, _ = ck.restore_best(ctx.abstract['params'])
            src = f'this run, step {ck.best_step()} (best validation {self.config.select_by})'
        elif self.o.init_from:
            params = init_from_lib.load('seqgan.init_from', self.o.init_from, self.config, self.ds,
                                        ctx.abstract['params'], str(self.o.generator),
                                        'seqgan.generator')
            src = f'{self.o.init_from} (its kept parameters)'
        else:
            params = state['params']
            src = f'this run, step {P}' + (' (untrained: no train_steps, no init_from)' if P == 0 else '')
        g_tx = self._steps.g_tx
        new = dict(state, params=params,
                   opt_state=jax.jit(g_tx.init, out_shardings=ctx.shardings['opt_state'])(params))
        if self.delay > 0:       # fresh buffers (host round trip): never one buffer twice
            new['rollout_params'] = jax.device_put(jax.device_get(params), ctx.shardings['rollout_params'])
        meta = {'best_score': -math.inf, 'best_step': -1, 'seqgan_from': src,
                'mle_best': {k: ctx.meta.get(k) for k in ('best_score', 'best_step')}}
        ctx.log(f'SeqGAN: generator copied from {src}; discriminator pretraining for {C} steps')
        return new, meta

    def describe(self):
        P, C, G = self.schedule()
        o = self.o
        n_d = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(jax.eval_shape(
            lambda r: init_discriminator(self.disc, self.info, r), jax.random.PRNGKey(0))))
        return (f'SeqGAN ({o.generator} generator): '
                + (f'the generator kept by {o.init_from}' if o.init_from else f'{P} MLE steps')
                + f', {C} discriminator steps, {G} '
                f'rounds (g-steps {o.g_steps}, d-steps {o.d_steps}, N={o.num_rollouts} roll-outs, '
                f'roll-out policy {"delayed r=%g" % self.delay if self.delay > 0 else "G at the round start"}, '
                f'baseline {o.baseline}); discriminator {n_d:,} parameters, windows '
                f'{[w for w, _ in self.disc.cfg.used_filters]}')

    def console(self, phase, m):
        if phase == 'seq2seq':
            return f'loss {m["loss"]:.4f} gnorm {m["grad_norm"]:.3f}'
        keys = ('g_loss', 'reward', 'reward_final', 'sample_nll', 'd_loss', 'd_acc', 'd_real', 'd_fake')
        return ' '.join(f'{k} {m[k]:.4f}' for k in keys if k in m)

    def generate_fn(self):
        return seq2seq.make_generate_fn(self.model, self.info, self.config.decode)


METHODS = {'seqgan': SeqGAN}
