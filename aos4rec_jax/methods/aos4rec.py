"""The seq2seq method: MLE training, and AOS4Rec's oracular learning and SSRGAN as switches.

`config.model` 'transformer' or 'gru' (the networks of models/). The schedule and the steps
are those of aos4rec_jax/ssrgan.py (Sec. 4.3):

  phase 'seq2seq'  config.train_steps        MLE, or oracular learning (aos4rec.oracle)
  phase 'critic'   aos4rec.critic_pretrain_steps   (aos4rec.adversarial only)
  phase 'gan'      aos4rec.gan_steps SSRGAN rounds (aos4rec.adversarial only)

Entering the critic phase copies the generator kept by the seq2seq phase (best validation), or
the kept parameters of another run (aos4rec.init_from), gives it a fresh optimizer state and
starts model selection again. The K-lists come from the configured decoder (config.decode).
"""
from __future__ import annotations

import json
import math
import os

import jax

from aos4rec_jax import checkpoint as ckpt_lib
from aos4rec_jax import config as config_lib
from aos4rec_jax import critic as critic_lib
from aos4rec_jax import seq2seq
from aos4rec_jax import sharding as shard_lib
from aos4rec_jax import ssrgan
from aos4rec_jax.methods.base import Method, Phase, RunError


def init_state_fn(model, tx, info, critic=None, critic_tx=None):
    """Pure init(rng) -> {step, params, opt_state, rng[, critic, critic_opt_state]}."""
    def init(rng):
        import jax.numpy as jnp
        p_rng, s_rng = jax.random.split(rng)
        params = seq2seq.init_params(model, info, p_rng)
        state = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=s_rng)
        if critic is not None:
            cp = critic_lib.init_critic(critic, info, jax.random.fold_in(p_rng, 1))
            state.update(critic=cp, critic_opt_state=critic_tx.init(cp))
        return state
    return init


def load_init_from(config, ds, abstract_params):
    """The kept generator parameters of the run in config.aos4rec.init_from (checked to match)."""
    src = config.aos4rec.init_from
    cfg_path, ds_path = os.path.join(src, 'config.json'), os.path.join(src, 'dataset.json')
    if not (os.path.exists(cfg_path) and os.path.exists(ds_path)):
        raise RunError(f'config.aos4rec.init_from: {src} is not a run folder of main.py '
                       '(no config.json/dataset.json)')
    with open(cfg_path) as f:
        other = json.load(f)
    with open(ds_path) as f:
        other_dir = json.load(f)['data_dir']
    mine = config.to_dict()
    diff = [k for k in ('model', 'model_kwargs', 'history_len', 'target_len', 'compute_dtype')
            if other.get(k) != mine.get(k)]
    if not mine['data_dir'] and not other.get('data_dir'):       # both synthetic: same oracle data?
        if {k: v for k, v in other.get('synthetic', {}).items() if k != 'cache_dir'} != \
                {k: v for k, v in mine['synthetic'].items() if k != 'cache_dir'}:
            diff.append('synthetic')
    elif os.path.abspath(other_dir) != os.path.abspath(ds.data_dir):
        diff.append(f'data ({other_dir} vs {ds.data_dir})')
    if diff:
        raise RunError(f'config.aos4rec.init_from: {src} differs from this run in {", ".join(diff)}')
    params = ckpt_lib.restore_params_only(src, abstract_params, 'best')
    shardings = jax.tree_util.tree_map(lambda a: a.sharding, abstract_params)
    return jax.device_put(params, shardings)


class AOS4Rec(Method):
    """Seq2seq recommender trained by MLE, optionally with the oracle and SSRGAN (the module doc)."""

    def __init__(self, config, ds):
        super().__init__(config, ds)
        self.model = seq2seq.build_model(config, ds.info)
        self.a = config.aos4rec
        self.adversarial = bool(self.a.adversarial)
        self.critic = critic_lib.build_critic(config, ds.info) if self.adversarial else None
        self._steps = None

    @classmethod
    def resumable_changes(cls, config: dict, resumable: set) -> set:
        if config.get('aos4rec', {}).get('adversarial'):
            # the phases follow train_steps: only the last one (SSRGAN rounds) may be extended
            return (resumable - {'train_steps'}) | {'aos4rec.gan_steps'}
        return resumable

    def steps(self, mesh) -> ssrgan.Steps:
        if self._steps is None:
            shard_lib.check_batch_size(self.config.batch_size, mesh)
            self._steps = ssrgan.Steps(self.config, self.model, self.critic, self.info,
                                       self.config.batch_size, shard_lib.batch_sharding(mesh))
        return self._steps

    def init_state(self, rng):
        # the optimizers do not depend on the mesh: build them here for load_run (no mesh)
        tx = seq2seq.make_optimizer(self.config)
        d_tx = ssrgan.make_critic_optimizer(self.config) if self.adversarial else None
        return init_state_fn(self.model, tx, self.info, self.critic, d_tx)(rng)

    def phases(self, mesh):
        st = self.steps(mesh)
        P, C, G = ssrgan.schedule(self.config)
        out = [Phase('seq2seq', P, st.seq2seq_step, examples_per_step=self.config.batch_size,
                     epoch_examples=self.info.num_windows)]
        if self.adversarial:
            out += [Phase('critic', C, st.critic_step, validate=False, enter=self._enter_ssrgan,
                          entered_key='ssrgan_from'),
                    Phase('gan', G, st.gan_round)]
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
            params = load_init_from(self.config, self.ds, abstract['params'])
            src = f'{self.a.init_from} (its kept parameters)'
        else:
            params = state['params']
            src = 'this run, step %d%s' % (P, ' (untrained: no train_steps, no init_from)' if P == 0 else '')
        g_tx = self._steps.g_tx
        opt_state = jax.jit(g_tx.init, out_shardings=ctx.shardings['opt_state'])(params)
        meta = {'best_score': -math.inf, 'best_step': -1, 'ssrgan_from': src,
                'seq2seq_best': {k: meta.get(k) for k in ('best_score', 'best_step')}}
        ctx.log(f'SSRGAN phase: generator copied from {src}; critic pretraining for {C} steps')
        return dict(state, params=params, opt_state=opt_state), meta

    def describe(self):
        a = self.a
        if not (a.oracle or self.adversarial):
            return None
        P, C, G = ssrgan.schedule(self.config)
        n_crit = 0
        if self.critic is not None:
            abstract = jax.eval_shape(lambda r: critic_lib.init_critic(self.critic, self.info, r),
                                      jax.random.PRNGKey(0))
            n_crit = sum(int(x.size) for x in jax.tree_util.tree_leaves(abstract))
        return (f'schedule: {P} seq2seq steps ({"oracular, b=%d mu=%g" % (a.beam_size, a.mu) if a.oracle else "MLE"})'
                + (f', {C} critic pretraining steps, {G} SSRGAN rounds (g-steps {a.g_steps}, d-steps '
                   f'{a.d_steps}, c={a.num_next}, critic {n_crit:,} parameters, lipschitz={a.lipschitz})'
                   if self.adversarial else ''))

    def console(self, phase, m):
        if phase == 'seq2seq':
            return f'loss {m["loss"]:.4f} gnorm {m["grad_norm"]:.3f}' + (f' p {m["p"]:.3f}' if 'p' in m else '')
        keys = ('wasserstein', 'td_loss', 'gp', 'generator_loss', 'advantage', 'sample_nll')
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
