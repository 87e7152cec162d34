"""The seq2seq method: MLE training, and AOS4Rec's oracular learning and SSRGAN as switches.

`config.model` 'transformer' or 'gru' (the networks of models/). The schedule and the steps
are those of aos4rec_jax/ssrgan.py (Sec. 4.3):

  phase 'seq2seq'  config.train_steps        MLE, or oracular learning (aos4rec.oracle)
  phase 'critic'   aos4rec.critic_pretrain_steps   (aos4rec.adversarial only)
  phase 'gan'      aos4rec.gan_steps SSRGAN rounds (aos4rec.adversarial only)

Entering the critic phase copies the generator kept by the seq2seq phase (best validation), or
the kept parameters of another finished run (aos4rec.init_from, with train_steps 0; checked and
loaded by methods/init_from.py, shared with SeqGAN), gives it a fresh optimizer state and starts
model selection again. The K-lists come from the configured decoder (config.decode).

The critic is measured on held-out validation users (aos4rec.critic_eval_users of the seeded
validation subset) at every validation step of the critic and SSRGAN phases (ssrgan.py, "Measuring
the critic"): train.jsonl's line of that step gets val_wasserstein, val_auc, val_auc_paired,
val_adv_mean, val_adv_std, val_auc_nll and val_auc_nll_paired (`summarize`).
"""
from __future__ import annotations

import math
import os

import numpy as np

import jax
import jax.numpy as jnp

from aos4rec_jax import aos4rec as aos4rec_lib
from aos4rec_jax import config as config_lib
from aos4rec_jax import critic as critic_lib
from aos4rec_jax import data as data_lib
from aos4rec_jax import optim
from aos4rec_jax import seq2seq
from aos4rec_jax import sharding as shard_lib
from aos4rec_jax import ssrgan
from aos4rec_jax.methods import init_from as init_from_lib
from aos4rec_jax.methods.base import Method, Phase, RunError


def init_state_fn(model, tx, info, critic=None, critic_tx=None, watch=False, keep_best=False):
    """Pure init(rng) -> {step, params, opt_state, rng[, critic, critic_opt_state][,
    critic_watch][, critic_best]}; `critic_watch` (the stopping rule's record,
    aos4rec.critic_watch_init) only with `watch`, so that a run without the rule keeps the state it
    always had; `critic_best` ({critic, critic_opt_state}: the critic of the best measurement,
    aos4rec.critic_keep_best) only with `watch` and `keep_best`."""
    def init(rng):
        p_rng, s_rng = jax.random.split(rng)
        params = seq2seq.init_params(model, info, p_rng)
        state = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=s_rng)
        if critic is not None:
            cp = critic_lib.init_critic(critic, info, jax.random.fold_in(p_rng, 1))
            state.update(critic=cp, critic_opt_state=critic_tx.init(cp))
            if watch:
                state['critic_watch'] = aos4rec_lib.critic_watch_init()
                if keep_best:      # copies: a donated state must not hold one buffer twice
                    state['critic_best'] = jax.tree_util.tree_map(
                        jnp.copy, dict(critic=cp, critic_opt_state=state['critic_opt_state']))
        return state
    return init


class AOS4Rec(Method):
    """Seq2seq recommender trained by MLE, optionally with the oracle and SSRGAN (the module doc)."""

    def __init__(self, config, ds):
        super().__init__(config, ds)
        self.model = seq2seq.build_model(config, ds.info)
        self.a = config.aos4rec
        self.adversarial = bool(self.a.adversarial)
        self.critic = critic_lib.build_critic(config, ds.info) if self.adversarial else None
        self._critic_shapes = None      # critic_shapes(), traced once
        frozen = critic_lib.frozen_patterns(config)
        if self.critic is not None and frozen:
            why = critic_lib.check_frozen(self.critic_shapes(), frozen)
            if why:
                raise config_lib.ConfigError(f'config.aos4rec.critic_frozen={self.a.critic_frozen!r}: {why}')
        # the stopping rule of critic pretraining: on with a patience and held-out users
        self.stopping = (self.adversarial and int(self.a.critic_patience) > 0
                         and int(self.a.critic_eval_users) > 0)
        self.keep_best = self.stopping and bool(self.a.critic_keep_best)
        self._steps = None
        self._mesh = None
        self._windows = None            # window_cums(), computed once

    def critic_shapes(self):
        """The critic's parameters as shapes (jax.eval_shape of its init), traced once: read by
        the check of aos4rec.critic_frozen and by `describe`."""
        if self._critic_shapes is None:
            self._critic_shapes = jax.eval_shape(
                lambda r: critic_lib.init_critic(self.critic, self.info, r), jax.random.PRNGKey(0))
        return self._critic_shapes

    @classmethod
    def generator_network(cls, config: dict):
        return config.get('model')

    @classmethod
    def resumable_changes(cls, config: dict, resumable: set) -> set:
        if config.get('aos4rec', {}).get('adversarial'):
            # the phases follow train_steps: only the last one (SSRGAN rounds) may be extended
            # ... and the bar the SSRGAN phase asks of the critic, checked on entering it (a run
            # stopped there by critic_below_bar=stop goes on with warn or a lower bar)
            return (resumable - {'train_steps'}) | {'aos4rec.gan_steps', 'aos4rec.critic_auc_bar',
                                                    'aos4rec.critic_below_bar'}
        return resumable

    def steps(self, mesh) -> ssrgan.Steps:
        if self._steps is None:
            shard_lib.check_batch_size(self.config.batch_size, mesh)
            p = self.ds.prepared
            # the ban of a training window is its whole history: at most the longest train part
            max_history = int(max(1, p.n_train.max() - 1))
            n_val = int(self.a.critic_eval_users)
            critic_eval = self.ds.eval_set('valid', n_val) if self.adversarial and n_val else None
            self._steps = ssrgan.Steps(self.config, self.model, self.critic, self.info,
                                       self.config.batch_size, shard_lib.batch_sharding(mesh),
                                       max_history=max_history, critic_eval=critic_eval,
                                       window_cums=self.window_cums())
            self._mesh = mesh
        return self._steps

    def window_cums(self):
        """None, or (aos4rec.critic_holdout > 0) the windows of the seq2seq phase (users not held
        out) and of the critic and SSRGAN phases (the held-out users): data.holdout_users.
        Computed once; the count of held-out users is kept beside them for `describe`."""
        f = float(self.a.critic_holdout)
        if f <= 0:
            return None
        if self._windows is None:
            held = data_lib.holdout_users(self.info.num_users, f)
            cum = self.ds.window_cum
            out = {'seq2seq': data_lib.windows_of_users(cum, ~held),
                   'critic': data_lib.windows_of_users(cum, held)}
            for part, what in (('seq2seq', 'the seq2seq phase'),
                               ('critic', 'the critic and SSRGAN phases')):
                if out[part][-1] == 0:
                    raise RunError(f'config.aos4rec.critic_holdout={f:g}: {what} would get no '
                                   f'training window ({int(held.sum())} of {self.info.num_users} '
                                   'users held out)')
            self._windows = (out, int(held.sum()))
        return self._windows[0]

    def init_state(self, rng):
        # the optimizers do not depend on the mesh: build them here for load_run (no mesh)
        tx = optim.make_optimizer(self.config)
        d_tx = ssrgan.make_critic_optimizer(self.config) if self.adversarial else None
        return init_state_fn(self.model, tx, self.info, self.critic, d_tx, self.stopping,
                             self.keep_best)(rng)

    def phases(self, mesh):
        st = self.steps(mesh)
        P, C, G = ssrgan.schedule(self.config)
        out = [Phase('seq2seq', P, st.seq2seq_step, examples_per_step=self.config.batch_size,
                     epoch_examples=st.seq2seq_windows)]
        if self.adversarial:
            out += [Phase('critic', C, st.critic_step, validate=False, enter=self._enter_ssrgan,
                          entered_key='ssrgan_from'),
                    Phase('gan', G, st.gan_round, enter=self._enter_gan,
                          entered_key='critic_checked',
                          validate_on_entry=bool(self.a.gan_start_competes))]
        return out

    def _enter_ssrgan(self, state, ctx):
        """The generator that starts the SSRGAN phase: this run's kept seq2seq parameters, or
        init_from's; a fresh generator optimizer state; model selection starts again."""
        P, C, _ = ssrgan.schedule(self.config)
        ck, abstract, meta = ctx.checkpointer, ctx.abstract, ctx.meta
        if P > 0 and ck.best_step() is not None:
            params, _ = ck.restore_best(abstract['params'])
            src = f'this run, step {ck.best_step()} (best validation {self.config.select_by})'
        elif self.a.init_from:
            params = init_from_lib.load('aos4rec.init_from', self.a.init_from, self.config, self.ds,
                                        abstract['params'], self.config.model, 'model')
            src = f'{self.a.init_from} (its kept parameters)'
        else:
            params = state['params']
            src = 'this run, step %d%s' % (P, ' (untrained: no train_steps, no init_from)' if P == 0 else '')
        g_tx = self._steps.g_tx
        opt_state = jax.jit(g_tx.init, out_shardings=ctx.shardings['opt_state'])(params)
        critic_src = 'random'
        if str(self.a.critic_init) == 'generator':
            # the critic starts as a copy of this generator (a scalar head of its own) and with a
            # fresh optimizer state: critic.from_generator
            sh = ctx.shardings
            critic = jax.jit(critic_lib.from_generator, out_shardings=sh['critic'])(
                state['critic'], params)
            c_opt = jax.jit(self._steps.d_tx.init, out_shardings=sh['critic_opt_state'])(critic)
            state = dict(state, critic=critic, critic_opt_state=c_opt)
            critic_src = 'copied from the generator'

        meta = {'best_score': -math.inf, 'best_step': -1, 'ssrgan_from': src,
                'seq2seq_best': {k: meta.get(k) for k in ('best_score', 'best_step')}}
        ctx.log(f'SSRGAN phase: generator copied from {src}; critic {critic_src}; critic pretraining for '
                + (f'at most {C} steps (stopping rule)' if self.stopping else f'{C} steps'))
        return dict(state, params=params, opt_state=opt_state), meta

    def _critic_reached(self, state):
        """(what critic pretraining reached: a dict for the log and metrics/critic_pretraining.json,
        val_auc or None when the critic is not measured)."""
        P, C, _ = ssrgan.schedule(self.config)
        st = self._steps
        # which AUC (aos4rec.critic_auc): val_auc (pooled) or val_auc_paired; the record's
        # fields keep their names (val_auc, best_val_auc) and `auc` says which one they hold
        name = ssrgan.auc_key(self.config)
        rec = dict(cap=C, critic_patience=int(self.a.critic_patience),
                   critic_min_delta=float(self.a.critic_min_delta), auc=name)
        if 'critic_watch' in state:
            w = {k: np.asarray(v).item() for k, v in jax.device_get(state['critic_watch']).items()}
            stopped = bool(w['stopped'])
            rec.update(val_auc=float(w['last_auc']), best_val_auc=float(w['best_auc']),
                       best_step=int(w['best_step']), stopped_by_rule=stopped,
                       steps_run=(int(w['stop_step']) - P) if stopped else C)
            if 'critic_best' in state and w['best_step'] >= 0:
                # aos4rec.critic_keep_best: the phase goes on with the best measured critic
                rec.update(last_val_auc=rec['val_auc'], val_auc=rec['best_val_auc'],
                           kept_critic_step=rec['best_step'])
            auc = rec['val_auc'] if w['best_step'] >= 0 else None
        elif st.val is not None:       # no rule: measured here, as at the phase's last step
            data = self.ds.device_data(shard_lib.replicated(self._mesh))
            sep = jax.device_get(jax.jit(st.separation_of)(state, data))
            auc = float(sep[name])
            rec.update(val_auc=auc, val_wasserstein=float(sep['val_wasserstein']),
                       stopped_by_rule=False, steps_run=C)
        else:
            auc = None
            rec.update(val_auc=None, stopped_by_rule=False, steps_run=C)
        return rec, auc

    def _enter_gan(self, state, ctx):
        """Before the first SSRGAN round: what critic pretraining reached (the log line, the
        meta and metrics/critic_pretraining.json) and the bar (aos4rec.critic_auc_bar): a critic
        under it gets a one-line warning (critic_below_bar=warn) or stops the run
        (critic_below_bar=stop: RunError; the rerun resumes from the newest checkpoint, and the
        critic steps after it give the same critic again)."""
        P, C, _ = ssrgan.schedule(self.config)
        rec, auc = self._critic_reached(state)
        name = rec['auc']
        if 'kept_critic_step' in rec:
            sh = ctx.shardings          # copies: a donated state must not hold one buffer twice
            critic, c_opt = jax.jit(
                lambda b: jax.tree_util.tree_map(jnp.copy, (b['critic'], b['critic_opt_state'])),
                out_shardings=(sh['critic'], sh['critic_opt_state']))(state['critic_best'])
            state = dict(state, critic=critic, critic_opt_state=c_opt)
            ctx.log(f'critic pretraining: the critic of step {rec["kept_critic_step"]} ({name} '
                    f'{rec["val_auc"]:.4f}, the best measured; the last was '
                    f'{rec["last_val_auc"]:.4f}) goes on into the SSRGAN phase '
                    '(aos4rec.critic_keep_best)')
        bar, action = float(self.a.critic_auc_bar), str(self.a.critic_below_bar)
        passed = None if (auc is None or bar <= 0) else bool(auc >= bar)
        rec.update(bar=bar, passed=passed, below_bar=action)
        how = (f'stopped by the plateau rule at step {P + rec["steps_run"]} after '
               f'{rec["steps_run"]} of at most {C} updates (best {name} {rec["best_val_auc"]:.4f} '
               f'at step {rec["best_step"]})' if rec['stopped_by_rule'] else f'{C} updates')
        if auc is None:
            why = ('aos4rec.critic_eval_users 0' if int(self.a.critic_eval_users) == 0
                   else 'no critic pretraining step measured it')
            ctx.log(f'critic pretraining: {how}; its separation is not measured ({why}): the bar '
                    'is not checked')
        else:
            ctx.log(f'critic pretraining: {how}; {name} {auc:.4f} on held-out validation users'
                    + ('' if passed is None else f' (bar {bar:g}: {"passed" if passed else "NOT reached"})'))
        if jax.process_index() == 0:
            from aos4rec_jax import evaluation
            evaluation.write_json(os.path.join(ctx.checkpointer.workdir, 'metrics',
                                               'critic_pretraining.json'), rec)
        if passed is False:
            msg = (f'the critic reached {name} {auc:.4f} < aos4rec.critic_auc_bar {bar:g} after '
                   f'critic pretraining')
            if action == 'stop':
                raise RunError(
                    f'{msg}: the SSRGAN phase starts only from a critic that separates '
                    '(aos4rec.critic_below_bar=stop). Train the critic longer or better (a new '
                    'run: aos4rec.critic_pretrain_steps, d_learning_rate, gp_weight; '
                    'docs/results/critic_sweep.md), or rerun this command with '
                    '--config.aos4rec.critic_below_bar=warn (or a lower bar) to go on from the '
                    'newest checkpoint')
            ctx.log(f'WARNING: {msg}; the SSRGAN phase starts anyway (aos4rec.critic_below_bar=warn)')
        return state, dict(ctx.meta, critic_checked=rec)

    def describe(self):
        a = self.a
        if not (a.oracle or self.adversarial or float(a.critic_holdout) > 0):
            return None
        P, C, G = ssrgan.schedule(self.config)
        critic_size = ''
        if self.critic is not None:
            abstract = self.critic_shapes()
            n_all = sum(int(x.size) for x in jax.tree_util.tree_leaves(abstract))
            critic_size = f'{n_all:,} parameters'
            frozen = critic_lib.frozen_patterns(self.config)
            if frozen:
                mask = critic_lib.frozen_mask(abstract, frozen)
                n_train = sum(int(x.size) for x, f in zip(jax.tree_util.tree_leaves(abstract),
                                                          jax.tree_util.tree_leaves(mask)) if not f)
                critic_size += f', {n_train:,} trained ({",".join(frozen)} frozen)'
        return (f'schedule: {P} seq2seq steps ({"oracular, b=%d mu=%g" % (a.beam_size, a.mu) if a.oracle else "MLE"})'
                + (f', {C} critic pretraining steps, {G} SSRGAN rounds (g-steps {a.g_steps}, d-steps '
                   f'{a.d_steps}, c={a.num_next}, critic {critic_size}, lipschitz={a.lipschitz})'
                   if self.adversarial else '')
                + self._holdout_line()
                + (f'; critic pretraining stops when {ssrgan.auc_key(self.config)} has not improved by '
                   f'{float(a.critic_min_delta):g} in {int(a.critic_patience)} measurements '
                   f'(every {int(a.critic_eval_every) or int(self.config.eval_every)} steps; '
                   f'{C} the cap)' + ('; the best measured critic goes on into the SSRGAN phase'
                                      if self.keep_best else '')
                   if self.stopping else ''))

    def _holdout_line(self) -> str:
        cums = self.window_cums()
        if cums is None:
            return ''
        held = self._windows[1]
        return (f'; critic_holdout {float(self.a.critic_holdout):g}: seq2seq on '
                f'{int(cums["seq2seq"][-1]):,} windows of {self.info.num_users - held:,} users, '
                f'critic and SSRGAN on {int(cums["critic"][-1]):,} windows of the other {held:,}')

    def summarize(self, phase, summed, n):
        """The default, except the critic's separation on held-out users (ssrgan.Steps, measured
        at validation steps only): the mean over the measurements of the interval (val_count of
        them, usually one), and left out when there was none."""
        summed = dict(summed)
        count = float(summed.pop('val_count', 0.0))
        vals = {k: summed.pop(k) for k in ssrgan.Steps.SEPARATION_KEYS + ('val_auc_best',)
                if k in summed}
        # the stopping rule (critic phase): the update metrics are averaged over the steps that
        # updated (critic_updates of them; none after the stop), and the stop step is named
        active = summed.pop('critic_active', None)
        stop_at = summed.pop('critic_stop_step', None)
        if active is None:
            out = super().summarize(phase, summed, n)
        else:
            upd = float(active)
            out = {k: float(v / upd) for k, v in summed.items()} if upd > 0 else {}
            out['critic_updates'] = upd
        if stop_at is not None and float(stop_at) > 0:
            out['critic_stopped_at'] = float(stop_at)
        if count > 0:
            out.update({k: float(v / count) for k, v in vals.items()})
        return out

    def console(self, phase, m):
        if phase == 'seq2seq':
            return f'loss {m["loss"]:.4f} gnorm {m["grad_norm"]:.3f}' + (f' p {m["p"]:.3f}' if 'p' in m else '')
        keys = ('wasserstein', 'td_loss', 'gp', 'generator_loss', 'advantage', 'sample_nll',
                'val_wasserstein', 'val_auc', 'val_auc_paired', 'val_auc_best', 'val_auc_nll',
                'val_auc_nll_paired', 'val_adv_mean', 'val_adv_std',
                'critic_updates', 'critic_stopped_at')
        return ' '.join(f'{k} {m[k]:.4f}' for k in keys if k in m)

    def generate_fn(self):
        return seq2seq.make_generate_fn(self.model, self.info, self.config.decode)

    @classmethod
    def validate_config(cls, config):
        if config.decode.strategy == 'topk':
            raise config_lib.ConfigError("config.decode.strategy: 'topk' ranks next-item scores; a "
                                         f'seq2seq model ({config.model}) generates its list: use '
                                         'beam, greedy, sample, gumbel, multi_rra or multi_ra')


METHODS = {'transformer': AOS4Rec, 'gru': AOS4Rec}
