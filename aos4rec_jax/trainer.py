"""train_and_evaluate(config, workdir): one run, from data to the workdir's result files.

Workdir layout:
  config.json, dataset.json          the run's settings and the dataset's static facts
  checkpoints/, best/                orbax (see checkpoint.py); a rerun resumes from them
  metrics/train.jsonl                one line per log step: loss, grad norm, speed
  metrics/valid_history.jsonl        one line per validation during training
  metrics/valid_users.json           the validation users model selection looks at (seeded subset)
  metrics/valid.json, metrics/test.json   final figures (sampled and full protocol)
  predictions/test.parquet           user, target, generated, generated_full (raw ids)
  plots/training.png                 training curves
"""
from __future__ import annotations

import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from aos4rec_jax import checkpoint as ckpt_lib
from aos4rec_jax import config as config_lib
from aos4rec_jax import data as data_lib
from aos4rec_jax import datasets
from aos4rec_jax import evaluation
from aos4rec_jax import methods as methods_lib
from aos4rec_jax import preemption
from aos4rec_jax import run_summary
from aos4rec_jax import sharding as shard_lib
from aos4rec_jax import ssrgan
from aos4rec_jax import workdir_lock
from aos4rec_jax.methods import aos4rec as aos4rec_method
from aos4rec_jax.methods.base import PhaseContext, RunError

# Config fields that may change between a run and its resumption (they do not change the result
# of the training steps already taken).
RESUMABLE_CHANGES = ('train_steps', 'early_stop_patience', 'log_every', 'eval_every',
                     'checkpoint_every', 'keep_checkpoints',
                     'max_eval_users', 'eval_batch_size', 'decode',
                     # the way on after a divergence: the resumed run uses the new rate (logged)
                     'learning_rate', 'warmup_steps',
                     # the way on after running out of memory: the same loss without the logits
                     'loss_chunk',
                     # the same loss on the counted positions only (float rounding apart)
                     'pack_positions',
                     # the same network on the real items only (rounding and dropout's draws apart)
                     'pack_sequences')


# Config fields added after runs were already written; older config.json files get these values.
FIELDS_ADDED_LATER = {'select_by': 'ndcg', 'aos4rec': config_lib.aos4rec_defaults(),
                      'mesh': {'num_devices': 0}, 'early_stop_patience': 0, 'loss_chunk': 0,
                      'pack_positions': False, 'pack_sequences': False}


class TrainingDivergedError(FloatingPointError):
    """The loss or the gradients became NaN/inf."""


DIVERGED_ADVICE = ('Rerun the same command with a lower --config.learning_rate (or a longer '
                   '--config.warmup_steps): the run resumes from that checkpoint with the new '
                   'rate (docs/reliability.md, "Divergence")')


def _restore_kept(ck, abstract, best_step: int, fallback):
    """The kept (best) parameters, verified. If best/ fails, it is moved aside and the state
    checkpoint of the same step is used when one is kept; else `fallback` (said in one line)."""
    try:
        return ck.restore_best(abstract['params'])[0]
    except ckpt_lib.CheckpointError as e:
        dst = ck.discard_best(ck.best_step())
        log(f'WARNING: {e}; moved to {dst}')
    if best_step in ck.state_mgr.all_steps():
        try:
            params = ck.restore(best_step, abstract)[0]['params']
            log(f'using the parameters of step {best_step} from {ck.workdir}/checkpoints instead')
            return params
        except ckpt_lib.CheckpointError as e:
            log(f'WARNING: {e}')
    log(f'WARNING: the best parameters (step {best_step}) are lost; evaluating the last ones')
    return fallback


def log(msg: str) -> None:
    if jax.process_index() == 0:
        print(f'[{time.strftime("%H:%M:%S")}] {msg}', flush=True)


def _flatten(d, prefix=''):
    out = {}
    for k, v in d.items():
        key = f'{prefix}{k}'
        if isinstance(v, dict):
            out.update(_flatten(v, key + '.'))
        else:
            out[key] = v
    return out


# changes that leave a finished run's figures as they are (bookkeeping, or the same function)
_NOT_RESULT_CHANGES = ('log_every', 'checkpoint_every', 'keep_checkpoints', 'eval_batch_size',
                       'loss_chunk', 'pack_positions', 'pack_sequences')
# a finished run's final files: moved aside when the run goes on under a changed config
FINAL_FILES = ('metrics/test.json', 'metrics/valid.json', 'metrics/summary.json', 'summary.txt',
               'predictions/test.parquet')


def _check_resume_config(workdir: str, cfg: dict) -> list[str]:
    """Raises RunError when `workdir` holds a run of another config that cannot resume under
    this one; returns the changed keys that can change the run's figures (resumable ones, e.g.
    more train_steps)."""
    path = os.path.join(workdir, 'config.json')
    if not os.path.exists(path):
        return []
    old = _read_run_json(path)
    # fields added since the run was made take their defaults (nested: aos4rec.* one by one),
    # and so do the method's own options added since (Method.OPTIONS_ADDED_LATER)
    method_cls = methods_lib.get(cfg['model'])
    added = {cfg['model']: dict(method_cls.OPTIONS_ADDED_LATER)}
    a = {**_flatten(FIELDS_ADDED_LATER), **_flatten(added), **_flatten(old)}
    b = _flatten(cfg)
    resumable = method_cls.resumable_changes(cfg, set(RESUMABLE_CHANGES))
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    diff = [k for k in changed if k.split('.')[0] not in resumable and k not in resumable]
    if diff:
        details = ', '.join(f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in diff[:5])
        raise RunError(f'{workdir} holds a run with a different config ({details}); use a new '
                       '--workdir, or the same config to resume it')
    for k in ('learning_rate', 'warmup_steps', 'pack_positions', 'pack_sequences'):
        if k in a and a.get(k) != b.get(k):
            log(f'config.{k} changed from {a.get(k)!r} to {b.get(k)!r}: the resumed run '
                'continues with the new value')
    return [k for k in changed if k.split('.')[0] not in _NOT_RESULT_CHANGES]


def _supersede_final_files(workdir: str, changed: list[str]) -> None:
    """A finished run going on under a changed config (e.g. more train_steps): its final files
    (FINAL_FILES) are moved to superseded/STAMP/, so the folder never shows the old figures as
    the new config's while it trains (a table driver takes metrics/test.json as the result)."""
    present = [f for f in FINAL_FILES if os.path.exists(os.path.join(workdir, f))]
    if not changed or 'metrics/test.json' not in present:
        return
    dest = os.path.join(workdir, 'superseded', time.strftime('%Y%m%d-%H%M%S', time.gmtime()))
    for f in present:
        os.makedirs(os.path.dirname(os.path.join(dest, f)), exist_ok=True)
        os.replace(os.path.join(workdir, f), os.path.join(dest, f))
    log(f'the finished run goes on under a changed config ({", ".join(changed[:5])}): its final '
        f'figures are moved to {dest}')


def _truncate_jsonl(path: str, max_step: int) -> None:
    """Drops lines logged after `max_step` (a resumed run logs them again), and a last line cut
    by a kill or a full disk (with a warning; any other unreadable line is an error)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        raw = f.read().split('\n')
    lines = []
    for i, l in enumerate(raw):
        if not l.strip():
            continue
        try:
            rec = json.loads(l)
        except ValueError:
            if any(x.strip() for x in raw[i + 1:]):
                raise RunError(f'{path}:{i + 1}: not a JSON line (the file was edited or '
                               'damaged); remove the line to resume') from None
            log(f'WARNING: {path}:{i + 1}: the last line was cut off (a kill or a full disk '
                'while it was written); dropped')
            continue
        if rec['step'] <= max_step:
            lines.append(l + '\n')
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'w') as f:
        f.writelines(lines)
    os.replace(tmp, path)


def _append_jsonl(path: str, rec: dict) -> None:
    if jax.process_index() != 0:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'a') as f:
        f.write(json.dumps(rec) + '\n')


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    return f'{s // 3600}h{s % 3600 // 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


# ------------------------------------------------------------------------------ training
make_train_step = ssrgan.make_mle_step      # the MLE step (benchmarks and tests use it by this name)


def sharded_init(init, config, mesh):
    """(jitted `init` producing a sharded state, abstract state with shardings, shardings, rng)."""
    rng = jax.random.PRNGKey(config.seed)
    abstract = jax.eval_shape(init, rng)
    shardings = shard_lib.state_shardings(abstract, mesh, config.mesh.shard_items)
    init_fn = jax.jit(init, out_shardings=shardings)
    abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return init_fn, abstract, shardings, rng


def create_train_state(config, model, tx, info, mesh, critic=None, critic_tx=None):
    """The seq2seq method's state, sharded: (init_fn, abstract, shardings, rng) (see sharded_init).

    With a critic the state also holds `critic` and `critic_opt_state` (ssrgan.py).
    """
    return sharded_init(aos4rec_method.init_state_fn(model, tx, info, critic, critic_tx), config, mesh)


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


class Schedule:
    """The method's phases laid end to end on the step axis."""

    def __init__(self, phases):
        self.phases = list(phases)
        self.starts, pos = [], 0
        for ph in self.phases:
            self.starts.append(pos)
            pos += int(ph.steps)
        self.total = pos

    def at(self, step: int):
        """The phase of the update that takes the state from `step` to `step + 1`."""
        for ph, s in zip(self.phases, self.starts):
            if s <= step < s + ph.steps:
                return ph
        return self.phases[-1]

    def starting_at(self, step: int):
        """Phases whose first step is `step` (a phase of 0 steps included), in order."""
        return [ph for ph, s in zip(self.phases, self.starts) if s == step]


def train(config, workdir: str, ds: data_lib.Dataset, method, mesh, evaluator, watcher=None):
    """Runs (or resumes) the method's phases. Returns the parameters to evaluate.

    `watcher` (preemption.Watcher): asked after every step; on a signal the step is saved (with
    the step metrics accumulated since the last log line, so the resumed run logs the same
    lines) and preemption.Stopped is raised."""
    info = ds.info
    sched = Schedule(method.phases(mesh))
    total = sched.total
    init_fn, abstract, shardings, rng = sharded_init(method.init_state, config, mesh)
    repl = shard_lib.replicated(mesh)
    data = ds.device_data(repl)

    def jit_step(f):
        return jax.jit(f, in_shardings=(shardings, repl), out_shardings=(shardings, repl),
                       donate_argnums=0)
    step_fns = {ph.name: jit_step(ph.step_fn) for ph in sched.phases}

    ck = ckpt_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
    found = ck.restore_latest_verified(abstract, log=log)
    meta = {'best_score': -math.inf, 'best_step': -1}
    pending = None       # step metrics accumulated before a preemption save (see `stop`)
    if found is not None:
        latest, state, meta = found
        pending = meta.pop('pending_metrics', None)
        ck.prune_best_after(latest)
        log(f'resumed from checkpoint step {latest} ({workdir}/checkpoints)')
    else:
        state = init_fn(rng)
        ck.prune_best_after(0)
    start = int(state['step'])
    mdir = os.path.join(workdir, 'metrics')
    if jax.process_index() == 0:
        _truncate_jsonl(os.path.join(mdir, 'train.jsonl'), start)
        _truncate_jsonl(os.path.join(mdir, 'valid_history.jsonl'), start)
    first = sched.phases[0]
    per_epoch = (first.epoch_examples / first.examples_per_step
                 if first.examples_per_step and first.epoch_examples else info.num_windows / config.batch_size)
    log(f'model {config.model}: {_count(abstract["params"]):,} parameters; {info.num_windows:,} training windows '
        f'(1 epoch of the {first.name} phase = {per_epoch:.1f} steps); {mesh.devices.size} device(s) '
        f'{jax.devices()[0].platform}; steps {start} -> {total}')
    line = method.describe()
    if line:
        log(line)

    val_set = ds.eval_set('valid', config.max_eval_users)
    if jax.process_index() == 0:      # the users model selection looks at (a seeded subset)
        evaluation.write_json(os.path.join(mdir, 'valid_users.json'), {
            'max_eval_users': int(config.max_eval_users), 'users': len(val_set),
            'raw_users': [str(u) for u in ds.prepared.raw_users[val_set.users]]})
    oracle_data = datasets.oracle_for(ds) is not None
    if config.select_by == 'nll_oracle' and not oracle_data:
        raise config_lib.ConfigError('config.select_by: nll_oracle needs the synthetic dataset '
                                     '(this dataset has no oracle)')
    eval_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 10**6)
    acc, acc_n = None, 0
    t_last, s_last, t_start = time.time(), start, time.time()
    first_loss, blow_up_warned = None, False      # the first logged loss; the warning ran once

    def flush(step, phase):
        """Fetches the accumulated step metrics; raises if they are not finite."""
        nonlocal acc, acc_n, t_last, s_last, first_loss, blow_up_warned
        if acc is None:
            return
        m = method.summarize(phase.name, jax.device_get(acc), acc_n)
        acc, acc_n = None, 0
        bad = {k: v for k, v in m.items() if not math.isfinite(v)}
        if bad:
            good = ck.latest_step()
            raise TrainingDivergedError(
                f'training diverged in the {phase.name} phase: {bad} between steps {s_last} and {step}; '
                + (f'the last good checkpoint is step {good} in {workdir}/checkpoints (nothing newer was '
                   'saved)' if good is not None else 'no checkpoint was saved yet') +
                '. ' + DIVERGED_ADVICE)
        loss = m.get('loss')
        if loss is not None:
            if first_loss is None:
                first_loss = abs(loss)
            elif not blow_up_warned and abs(loss) > 1e6 * max(first_loss, 1e-12):
                blow_up_warned = True
                log(f'WARNING: the loss ({loss:.4g}) is over a million times its first logged value '
                    f'({first_loss:.4g}): the run is finite but has probably diverged; '
                    'lower config.learning_rate')
        now = time.time()
        sps = (step - s_last) / max(now - t_last, 1e-9)
        eta = (total - step) / max(sps, 1e-9)
        log(f'[{phase.name}] step {step}/{total} {method.console(phase.name, m)} | {sps:.2f} steps/s '
            f'| ETA {_fmt_time(eta)}')
        rec = dict(step=step, phase=phase.name, **m, steps_per_s=sps)
        if phase.examples_per_step and phase.epoch_examples:
            rec.update(examples_per_s=sps * phase.examples_per_step,
                       epoch=step * phase.examples_per_step / phase.epoch_examples)
        _append_jsonl(os.path.join(mdir, 'train.jsonl'), rec)
        t_last, s_last = now, step

    def diverged(step, what):
        good = ck.latest_step()
        return TrainingDivergedError(
            f'training diverged: {what} at step {step}; nothing non-finite was saved; '
            + (f'the newest checkpoint is step {good} in {workdir}/checkpoints (verified finite)'
               if good is not None else 'no checkpoint was saved yet')
            + '. ' + DIVERGED_ADVICE)

    def save(step, state):
        try:
            ck.save(step, state, meta)
        except ckpt_lib.NonFiniteState:
            raise diverged(step, 'the train state holds NaN or inf') from None

    def stop(step, state, signum, saved):
        """Saves `step` (unless just saved) with the unlogged step metrics, waits for the saves,
        and raises preemption.Stopped."""
        if not saved:
            extra = {}
            if acc is not None:
                leaves = jax.device_get(jax.tree_util.tree_leaves(acc))
                extra['pending_metrics'] = {'n': acc_n, 'sums': [np.asarray(x).item() for x in leaves]}
            try:
                ck.save(step, state, dict(meta, **extra))
            except ckpt_lib.NonFiniteState:
                raise diverged(step, 'the train state holds NaN or inf') from None
        ck.wait()
        name = preemption.signal_name(signum)
        msg = (f'stopped by {name} at step {step}/{total}: checkpoint {step} saved in '
               f'{workdir}/checkpoints; rerun the same command to resume from it')
        raise preemption.Stopped(msg, signum)

    def validate(step, state, entering=None):
        """entering: the Phase whose starting state this is (Phase.validate_on_entry)."""
        nonlocal meta
        t0 = time.time()
        summ, v_sampled, _ = evaluator(state['params'], val_set, eval_rng)
        ndcg = summ['sampled'][f'ndcg@{info.k}']
        phase_name = sched.at(step - 1).name if entering is None else entering.name
        rec = dict(step=step, phase=phase_name, **({'at_entry': True} if entering else {}),
                   **{f'sampled/{k}': v for k, v in summ['sampled'].items()},
                   **{f'full/{k}': v for k, v in summ['full'].items()}, users=summ['users'])
        if oracle_data:
            rec['nll_oracle'] = datasets.oracle_nll(ds, val_set, v_sampled)
        _append_jsonl(os.path.join(mdir, 'valid_history.jsonl'), rec)
        # higher is better: sampled or full NDCG, minus the oracle NLL, or the step itself ('last')
        score = {'ndcg': ndcg, 'full_ndcg': summ['full'][f'ndcg@{info.k}'],
                 'nll_oracle': -rec.get('nll_oracle', math.inf),
                 'last': float(step)}[config.select_by]
        improved = score > meta['best_score']
        log(f'valid @ step {step}' + (f' ({entering.name} phase start)' if entering else '')
            + f': sampled ndcg@{info.k} {ndcg:.4f} prec@{info.k} '
            f'{summ["sampled"][f"prec@{info.k}"]:.4f} full ndcg@{info.k} '
            f'{summ["full"][f"ndcg@{info.k}"]:.4f} ({summ["users"]} users, {time.time() - t0:.1f}s)'
            + (f' nll_oracle {rec["nll_oracle"]:.2f}' if oracle_data else '')
            + (' *best*' if improved else ''))
        # the early-stopping count: validations in a row without a better score, counted in the
        # last phase only (an earlier phase's plateau is that phase's business); it lives in the
        # checkpoints' meta, so a resumed run counts on where it was saved
        if not improved and sched.at(step - 1) is sched.phases[-1]:
            meta = dict(meta, stale=int(meta.get('stale', 0)) + 1)
        if improved:
            meta = dict(meta, best_score=float(score), best_step=int(step), stale=0,
                        best_phase=phase_name + (' phase start' if entering else ' phase'))
            try:
                ck.save_best(step, state['params'], meta)
            except ckpt_lib.NonFiniteState:
                raise diverged(step, 'the parameters hold NaN or inf') from None

    def enter(step, state):
        """Enters the phases starting at `step` that have an entry and were not entered yet
        (Phase.entered_key not in meta): their enter hook, then their entry validation; True
        if one was entered (the caller saves)."""
        nonlocal meta
        ran = False
        for ph in sched.starting_at(step):
            if not ph.has_entry or ph.entered_key in meta:
                continue
            if ph.enter is not None:
                ctx = PhaseContext(checkpointer=ck, abstract=abstract, shardings=shardings,
                                   meta=meta, step=step, log=log)
                state, meta = ph.enter(state, ctx)
            meta = dict(meta, **{ph.entered_key: meta.get(ph.entered_key, int(step))})
            ran = True
            if ph.validate_on_entry:
                validate(step, state, entering=ph)
        return state, ran

    patience = int(config.early_stop_patience)

    def stopped_early():
        return patience > 0 and int(meta.get('stale', 0)) >= patience

    def early_line(step):
        return (f'early stop at step {step}/{total}: {int(meta["stale"])} validations in a row '
                f'without a better {config.select_by} than step {meta["best_step"]}\'s '
                f'(config.early_stop_patience={patience})')

    step = start
    try:
        if step < total and stopped_early():     # resumed from the checkpoint of an early stop
            log(early_line(step) + '; nothing left to train')
        elif step < total:
            state, entered = enter(step, state)
            if entered:
                save(step, state)
        while step < total and not stopped_early():
            phase = sched.at(step)
            state, m = step_fns[phase.name](state, data)
            step += 1
            if pending is not None:        # resumed after a preemption save between two logs
                leaves, tdef = jax.tree_util.tree_flatten(m)
                acc = jax.tree_util.tree_unflatten(
                    tdef, [jnp.asarray(v, dtype=x.dtype) for v, x in zip(pending['sums'], leaves)])
                acc_n, pending = int(pending['n']), None
            acc = m if acc is None else jax.tree_util.tree_map(jnp.add, acc, m)
            acc_n += 1
            last = step == total
            boundary = sched.at(step) is not phase or last
            do_eval = phase.validate and (
                (config.eval_every and step % config.eval_every == 0) or boundary)
            do_ckpt = (config.checkpoint_every and step % config.checkpoint_every == 0) or last
            if step % config.log_every == 0 or do_eval or do_ckpt or boundary:
                flush(step, phase)
            if do_eval:
                validate(step, state)
                if not last and stopped_early():
                    log(early_line(step))
                    last = do_ckpt = True     # saved: the same command then finds nothing to do
            if not last:
                state, entered = enter(step, state)
                do_ckpt = do_ckpt or entered
            if do_ckpt:
                save(step, state)
            ck.check_errors()          # a background save that failed stops the run here
            signum = watcher.requested(step) if watcher is not None and not last else None
            if signum is not None:
                stop(step, state, signum, saved=do_ckpt)
        ck.wait()
        kept = meta['best_step']
        log(f'training done in {_fmt_time(time.time() - t_start)}; parameters kept for evaluation: '
            f'step {kept} (best validation by {config.select_by}'
            + (', ' + meta.get('best_phase', f'{sched.at(kept - 1).name} phase')
               if kept > 0 and len(sched.phases) > 1 else '') + ')')
        params = state['params']
        if ck.best_step() is not None and meta['best_step'] >= 0:
            params = _restore_kept(ck, abstract, meta['best_step'], params)
    finally:
        ck.wait()
        ck.close()
    return params


# ------------------------------------------------------------------------------ the run
def build(config, ds):
    """(method, generate_fn) for config.model (methods/ registry)."""
    method = methods_lib.build(config, ds)
    return method, method.generate_fn()


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains (if the model trains) and evaluates; writes the workdir files. Returns test metrics.

    One process per workdir: the run holds WORKDIR/.lock (workdir_lock.py) from here to the end.
    """
    config_lib.validate(config)
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() != 0:
        return _train_and_evaluate(config, workdir)
    with workdir_lock.hold(workdir):
        return _train_and_evaluate(config, workdir)


def check_against_data(config, info) -> None:
    """Settings that only the dataset can refute (ConfigError naming the field)."""
    n = info.num_items
    for field, v in (('decode.beam_size', config.decode.beam_size),
                     ('aos4rec.beam_size', config.aos4rec.beam_size)):
        if int(v) > n:
            raise config_lib.ConfigError(f'config.{field}: {v} beams, but the dataset has only {n} '
                                         'items (a beam holds distinct lists; the paper uses 5)')


def _train_and_evaluate(config, workdir: str) -> dict:
    cfg_dict = config.to_dict()
    changed = _check_resume_config(workdir, cfg_dict)
    # config.json and dataset.json are written only once the config and the data are known to
    # be usable: a failed start (a mistyped data_dir, a damaged file) leaves the workdir reusable
    ds = datasets.get_dataset(config, workdir, log=log)
    info = ds.info
    ds_path = os.path.join(workdir, 'dataset.json')
    recorded = _read_run_json(ds_path).get('fingerprint') if os.path.exists(ds_path) else None
    fp = datasets.check_fingerprint(ds, recorded)
    check_against_data(config, info)
    n_dev = int(config.mesh.get('num_devices', 0))
    mesh = shard_lib.make_mesh(jax.devices()[:n_dev] if n_dev else None)
    method, generate_fn = build(config, ds)
    if jax.process_index() == 0:
        _supersede_final_files(workdir, changed)
        evaluation.write_json(os.path.join(workdir, 'config.json'), cfg_dict)
        evaluation.write_json(os.path.join(workdir, 'dataset.json'),
                              dict(info.__dict__, data_dir=os.path.abspath(ds.data_dir),
                                   fingerprint=fp))
    log(f'dataset {ds.data_dir}: {info.num_users} users, {info.num_items} items, K={info.k}, '
        f'T={info.target_len}, L={info.history_len}, profile={info.profile} '
        f'(history items {"banned" if info.ban_history else "allowed"})')
    evaluator = evaluation.Evaluator(generate_fn, ds, config.eval_batch_size)
    with preemption.Watcher() as watcher:
        if method.trains:
            params = train(config, workdir, ds, method, mesh, evaluator, watcher)
        else:
            params = method.fit()
        watcher.immediate()        # training is saved: a signal now stops at once
        return _evaluate_and_finish(config, workdir, ds, method, evaluator, params)


def _evaluate_and_finish(config, workdir, ds, method, evaluator, params) -> dict:
    """Evaluates both splits with the kept parameters; the closing summary and the plot."""
    eval_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2 * 10**6)
    results = {split: evaluate_split(evaluator, params, ds, split, eval_rng, workdir,
                                     decode=method.decode_description())
               for split in ('valid', 'test')}
    if jax.process_index() == 0:
        run_summary.finish(config, workdir, ds, method, results)   # plot + closing summary
    return results


def evaluate_split(evaluator, params, ds, split: str, rng, workdir: str, decode, tag: str = '') -> dict:
    """Evaluates one split and writes metrics/{split}[_{tag}].json (and the test predictions).

    The summary also records the decoder, whether history items were banned, and on synthetic
    data NLL_oracle of the lists and of the true continuations.
    """
    es = ds.eval_set(split)
    t0 = time.time()
    summ, sampled, full = evaluator(params, es, rng, log=log)
    summ['decode'] = decode
    summ['ban_history'] = ds.info.ban_history
    if datasets.oracle_for(ds) is not None:
        summ['nll_oracle'] = {'sampled': datasets.oracle_nll(ds, es, sampled),
                              'full': datasets.oracle_nll(ds, es, full),
                              'target': datasets.oracle_nll(ds, es, es.target)}
    suffix = f'_{tag}' if tag else ''
    if jax.process_index() == 0:
        evaluation.write_json(os.path.join(workdir, 'metrics', f'{split}{suffix}.json'), summ)
        if split == 'test':
            evaluation.write_predictions(os.path.join(workdir, 'predictions', f'test{suffix}.parquet'),
                                         ds, es, sampled, full)
    K = ds.info.k
    log(f'{split}{f" [{tag}]" if tag else ""}: ' + ' '.join(
        f'{p}/{m}@{K}={summ[p][f"{m}@{K}"]:.4f}' for p in ('sampled', 'full') for m in ('prec', 'ndcg', 'bleu'))
        + f' ({summ["users"]} users, {time.time() - t0:.1f}s)')
    return summ


# ------------------------------------------------------------------------------ finished runs
def _read_run_json(path: str) -> dict:
    try:
        with open(path) as f:
            obj = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise RunError(f'{path}: not a valid JSON file ({e}); the run folder is damaged') from None
    if not isinstance(obj, dict):
        raise RunError(f'{path}: expected a JSON object; the run folder is damaged')
    return obj


def load_run(workdir: str, decode_overrides: dict | None = None, k: int | None = None,
             which: str = 'best'):
    """(config, dataset, method, params, generate_fn) of a run folder written by main.py.

    Parameters are the best validation ones (else the latest checkpoint's; which='last': the
    latest checkpoint's). `decode_overrides`
    replace fields of config.decode (e.g. {'strategy': 'greedy'}); `k` changes the list length.
    """
    import dataclasses
    import ml_collections
    cfg_path, ds_path = os.path.join(workdir, 'config.json'), os.path.join(workdir, 'dataset.json')
    if not (os.path.exists(cfg_path) and os.path.exists(ds_path)):
        raise FileNotFoundError(f'{workdir} is not a run folder of main.py (no config.json/dataset.json)')
    config = ml_collections.ConfigDict(_read_run_json(cfg_path))
    ds_record = _read_run_json(ds_path)
    data_dir = ds_record.get('data_dir')
    if not data_dir:
        raise RunError(f'{ds_path}: no data_dir recorded (damaged file)')
    for key, v in FIELDS_ADDED_LATER.items():      # runs written before these fields existed
        if key not in config:
            config[key] = v
    for key, v in config_lib.aos4rec_defaults().items():
        if key not in config.aos4rec:
            config.aos4rec[key] = v
    for key, v in (decode_overrides or {}).items():
        if v is not None:
            config.decode[key] = v
    config_lib.validate(config)
    if not os.path.isdir(data_dir):
        raise RunError(f'the run was trained on {data_dir}, which is not there any more '
                       f'({ds_path} names it)')
    ds = data_lib.Dataset.load(data_dir, config.history_len, config.target_len)
    datasets.check_fingerprint(ds, ds_record.get('fingerprint'))
    if k is not None:
        if int(k) < 1:
            raise config_lib.ConfigError(f'k: must be >= 1, got {k}')
        ds.info = dataclasses.replace(ds.info, k=int(k))
    check_against_data(config, ds.info)
    method, generate_fn = build(config, ds)
    if method.trains:
        abstract = jax.eval_shape(method.init_state, jax.random.PRNGKey(0))['params']
        try:
            params = ckpt_lib.restore_params_only(workdir, abstract, which)
        except ckpt_lib.CheckpointError as e:
            raise RunError(f'{e}; a run resumed by main.py moves such a step aside and goes on '
                           'from the previous one') from None
    else:
        params = method.fit()
    return config, ds, method, params, generate_fn
