"""Issue 12, "Measure the critic, then train it enough": the stopping rule of critic pretraining
(aos4rec.critic_patience, critic_min_delta, critic_eval_every; the cap critic_pretrain_steps), the
bar the SSRGAN phase asks of the critic (critic_auc_bar, critic_below_bar) and the critic's own
width (critic_width). The design (docs/aos4rec.md, "Critic pretraining: the stopping rule"): the
trainer's phases keep their fixed length; the rule's record lives in the train state
(`critic_watch`) and a stopped critic step is a no-op under lax.cond.

The whole-run tests replace the critic's measurement by a constructed AUC sequence (a function of
the step, `Steps.separation_of`), so the step the rule must stop at is known exactly."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aos4rec_jax import aos4rec as aos4rec_lib
from aos4rec_jax import checkpoint as ckpt_lib
from aos4rec_jax import config as config_lib
from aos4rec_jax import critic as critic_lib
from aos4rec_jax import data as data_lib
from aos4rec_jax import preemption
from aos4rec_jax import ssrgan
from aos4rec_jax import trainer
from tests.helpers import StopAt
from experiments.configs import aos4rec as aos_cfg


# ----------------------------------------------------------------------------- the plateau test
def _run_rule(aucs, patience, min_delta, first_step=10, every=5):
    w = aos4rec_lib.critic_watch_init()
    f = jax.jit(aos4rec_lib.critic_plateau, static_argnums=(3, 4))
    out = []
    for i, auc in enumerate(aucs):
        w = f(w, auc, first_step + i * every, patience, min_delta)
        out.append({k: np.asarray(v).item() for k, v in jax.device_get(w).items()})
    return out


def test_plateau_rule_stops_at_the_measurement_it_must():
    """patience 3, min_delta 0.005: an improvement must beat the best by more than 0.005 and resets
    the count; the third measurement in a row without one stops the critic, and nothing after
    changes the record (not even a large AUC)."""
    aucs = [0.50, 0.60, 0.603, 0.61, 0.612, 0.60, 0.614, 0.90]
    #        best  best  bad1   best  bad1   bad2  bad3: stop  (stopped: ignored)
    steps = [10 + 5 * i for i in range(len(aucs))]
    rec = _run_rule(aucs, patience=3, min_delta=0.005)
    assert [r['bad'] for r in rec] == [0, 0, 1, 0, 1, 2, 3, 3]
    assert [r['stopped'] for r in rec] == [0, 0, 0, 0, 0, 0, 1, 1]
    assert rec[-1]['stop_step'] == steps[6] == 40
    assert rec[-1]['best_auc'] == pytest.approx(0.61) and rec[-1]['best_step'] == steps[3]
    assert rec[-1]['last_auc'] == pytest.approx(0.614)          # the critic it stopped with
    assert [r['stop_step'] for r in rec[:6]] == [-1] * 6
    # min_delta 0: 0.603 and 0.612 are improvements; patience 1 stops at the first that is not
    rec = _run_rule(aucs, patience=1, min_delta=0.0)
    assert [r['stopped'] for r in rec] == [0, 0, 0, 0, 0, 1, 1, 1]
    assert rec[-1]['stop_step'] == steps[5] and rec[-1]['best_auc'] == pytest.approx(0.612)
    # an AUC that keeps rising never stops
    rec = _run_rule([0.5 + 0.01 * i for i in range(8)], patience=2, min_delta=0.005)
    assert not any(r['stopped'] for r in rec) and rec[-1]['best_step'] == steps[-1]


def test_config_fields_of_the_rule_the_bar_and_the_width():
    c = aos_cfg.get_config('tiny,adver')
    config_lib.validate(c)
    d = config_lib.aos4rec_defaults()
    # the rule is off by default (older runs, resumed, keep their state and schedule)
    assert d['critic_patience'] == 0 and d['critic_below_bar'] == 'warn' and d['critic_auc_bar'] == 0.7
    for field, value, match in (('critic_below_bar', 'maybe', 'critic_below_bar'),
                                ('critic_auc_bar', 1.5, 'critic_auc_bar'),
                                ('critic_min_delta', -0.1, 'critic_min_delta'),
                                ('critic_patience', -1, 'critic_patience'),
                                ('critic_width', 30, 'critic_width')):      # 2 heads: 30 ok...
        c = aos_cfg.get_config('tiny,adver')
        c.aos4rec[field] = value
        if field == 'critic_width':
            c.model_kwargs.num_heads = 4                                     # ... 4 heads: not
        with pytest.raises(config_lib.ConfigError, match=f'aos4rec.{match}'):
            config_lib.validate(c)
    c = aos_cfg.get_config('tiny,adver')
    c.aos4rec.critic_patience, c.aos4rec.critic_eval_users = 3, 0
    with pytest.raises(config_lib.ConfigError, match='critic_eval_users'):
        config_lib.validate(c)
    c = aos_cfg.get_config('tiny,adver')
    c.aos4rec.critic_patience, c.eval_every, c.aos4rec.critic_eval_every = 3, 0, 0
    with pytest.raises(config_lib.ConfigError, match='critic_eval_every'):
        config_lib.validate(c)


@pytest.mark.parametrize('model', ['transformer', 'gru'])
def test_critic_width_widens_the_critic_only(model):
    info = data_lib.DataInfo(num_items=20, num_users=10, k=4, target_len=4, history_len=6,
                             ban_history=True, num_candidates=5, num_windows=100,
                             profile='default', protocol='paper')
    c = aos_cfg.get_config('tiny')
    c.model = model
    shapes = {}
    for width in (0, 64):
        c.aos4rec.critic_width = width
        cr = critic_lib.build_critic(c, info)
        p = jax.eval_shape(lambda r: critic_lib.init_critic(cr, info, r), jax.random.PRNGKey(0))
        shapes[width] = {'/'.join(str(k.key) for k in path): x.shape
                         for path, x in jax.tree_util.tree_leaves_with_path(p)}
    emb = lambda s: next(v for k, v in s.items() if 'embed' in k and len(v) == 2)
    assert emb(shapes[0])[1] == c.model_kwargs.embed_dim == 32 and emb(shapes[64])[1] == 64
    if model == 'transformer':       # the feed-forward keeps its ratio: 64 * 64 / 32 = 128
        assert any(v == (64, 128) for v in shapes[64].values())


# ----------------------------------------------------------------------------- whole runs
P, C, G = 4, 16, 2
# measurements in the critic phase (critic_eval_every 2; eval_every 4 falls on them too) at
# steps 6, 8, ..., 20; the constructed AUCs make the rule (patience 3, min_delta 0.005) stop at 18
AUC_AT = {6: 0.50, 8: 0.60, 10: 0.603, 12: 0.61, 14: 0.612, 16: 0.60, 18: 0.614, 20: 0.90}
STOP = 18


def _config(workdir_data, **aos):
    c = aos_cfg.get_config('tiny,adver')
    c.model = 'gru'
    c.synthetic.cache_dir = str(workdir_data)
    c.train_steps, c.eval_every, c.checkpoint_every, c.log_every = P, 4, 4, 1
    c.aos4rec.critic_pretrain_steps, c.aos4rec.gan_steps, c.aos4rec.d_steps = C, G, 2
    c.aos4rec.critic_eval_every, c.aos4rec.critic_patience, c.aos4rec.critic_min_delta = 2, 3, 0.005
    c.aos4rec.critic_keep_best = False     # the last critic goes on (the tests below say when not)
    c.aos4rec.critic_auc = 'pooled'        # the constructed AUCs are val_auc's (the paired test
                                           # below sets 'paired'; the experiments config reads it)
    for k, v in aos.items():
        c.aos4rec[k] = v
    return c


def construct_auc(monkeypatch, key='val_auc', **constants):
    """The measured `key` becomes AUC_AT[step] (0.3 at any other step) and each of `constants`
    (metric name -> value) that value; the other separation figures are the real ones."""
    real = ssrgan.Steps.separation_of
    table = np.full(64, 0.3, np.float32)
    for s, v in AUC_AT.items():
        table[s] = v

    def fake(self, state, data):
        out = dict(real(self, state, data))
        out[key] = jnp.asarray(table)[state['step']]
        out.update({k: jnp.float32(v) for k, v in constants.items()})
        return out

    monkeypatch.setattr(ssrgan.Steps, 'separation_of', fake)


@pytest.fixture
def constructed_auc(monkeypatch):
    """The critic's measured (pooled) AUC becomes AUC_AT[step]: construct_auc."""
    construct_auc(monkeypatch)


def _lines(workdir):
    strip = lambda r: {k: v for k, v in r.items() if k not in ('steps_per_s', 'examples_per_s')}
    return [strip(json.loads(l)) for l in open(os.path.join(workdir, 'metrics', 'train.jsonl'))]


def _final_state(workdir):
    ck = ckpt_lib.Checkpointer(str(workdir))
    state, _ = ck.restore(ck.latest_step(), None)
    ck.close()
    return state


def _updates(opt_state):
    """Adam's update count in an optimizer state restored without its structure."""
    counts = [np.asarray(x).item() for p, x in jax.tree_util.tree_leaves_with_path(opt_state)
              if 'count' in jax.tree_util.keystr(p)]
    assert counts
    return counts[0]


@pytest.mark.slow
def test_the_rule_stops_the_critic_where_it_must_and_a_resumed_run_ends_identical(
        tmp_path, constructed_auc, monkeypatch, capsys):
    """The constructed AUCs stop the critic at step 18 of the critic phase (steps 5-20): 14
    updates, then steps 19 and 20 are no-ops (no update, no measurement); the phase keeps its 16
    steps; train.jsonl names the stop; the SSRGAN phase's entry reports what was reached and
    warns under the bar (0.614 < 0.7, critic_below_bar=warn). A run stopped (SIGTERM) before the
    stop, at step 17, and again after it, at step 19, resumes to the uninterrupted run's end."""
    full = tmp_path / 'full'
    trainer.train_and_evaluate(_config(tmp_path / 'data'), str(full))
    console = capsys.readouterr().out
    lines = _lines(full)
    assert [r['step'] for r in lines] == list(range(1, P + C + G + 1))
    crit = {r['step']: r for r in lines if r['phase'] == 'critic'}
    assert sorted(crit) == list(range(P + 1, P + C + 1))
    assert [s for s, r in crit.items() if 'critic_stopped_at' in r] == [STOP]
    assert crit[STOP]['critic_stopped_at'] == STOP
    assert [s for s, r in crit.items() if 'val_auc' in r] == sorted(s for s in AUC_AT if s <= STOP)
    for s in range(P + 1, P + C + 1):
        assert crit[s]['critic_updates'] == (1.0 if s <= STOP else 0.0), s
        assert ('wasserstein' in crit[s]) == (s <= STOP), s
    assert crit[STOP]['val_auc'] == pytest.approx(0.614)
    assert crit[STOP]['val_auc_best'] == pytest.approx(0.61)
    state = _final_state(full)
    # the critic's optimizer counted 14 pretraining updates, then G rounds of d_steps 2
    assert _updates(state['critic_opt_state']) == (STOP - P) + G * 2
    w = {k: np.asarray(v).item() for k, v in state['critic_watch'].items()}
    assert w['stopped'] == 1 and w['stop_step'] == STOP and w['best_step'] == 12
    rec = json.loads((full / 'metrics' / 'critic_pretraining.json').read_text())
    assert rec['stopped_by_rule'] and rec['steps_run'] == STOP - P and rec['cap'] == C
    assert rec['val_auc'] == pytest.approx(0.614) and rec['passed'] is False
    assert (f'critic pretraining: stopped by the plateau rule at step {STOP} after {STOP - P} of '
            f'at most {C} updates') in console
    assert 'WARNING: the critic reached val_auc 0.6140 < aos4rec.critic_auc_bar 0.7' in console

    # stopped before the rule stops the critic, and again in the idle stretch after it
    wd = tmp_path / 'stopped'
    for at in (STOP - 1, STOP + 1):
        with monkeypatch.context() as m:
            m.setattr(preemption, 'Watcher', lambda at=at: StopAt(at))
            with pytest.raises(preemption.Stopped):
                trainer.train_and_evaluate(_config(tmp_path / 'data'), str(wd))
    trainer.train_and_evaluate(_config(tmp_path / 'data'), str(wd))
    other = _final_state(wd)
    assert int(other['step']) == int(state['step']) == P + C + G
    for key in ('params', 'opt_state', 'critic', 'critic_opt_state', 'critic_watch', 'rng'):
        la, lb = jax.tree_util.tree_leaves(state[key]), jax.tree_util.tree_leaves(other[key])
        assert len(la) == len(lb) > 0
        for x, y in zip(la, lb):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=key)
    assert _lines(wd) == lines
    read = lambda p: json.loads(p.read_text())
    assert read(full / 'metrics' / 'test.json') == read(wd / 'metrics' / 'test.json')
    assert read(full / 'metrics' / 'critic_pretraining.json') == read(wd / 'metrics' / 'critic_pretraining.json')


@pytest.mark.slow
def test_rule_off_keeps_the_schedule_and_stop_below_the_bar_ends_the_run(
        tmp_path, constructed_auc, capsys):
    """critic_patience 0 (the default): the same plateauing AUCs do not stop anything: all 16
    critic updates run, the state has no critic_watch and the log no rule fields; the bar is
    still checked on entering the SSRGAN phase (the measurement there: 0.9 at step 20, passed).
    critic_below_bar=stop with the rule on: the critic under the bar (0.614) stops the run with
    a RunError naming the AUC before any SSRGAN round; rerun with warn, it goes on."""
    off = tmp_path / 'off'
    trainer.train_and_evaluate(_config(tmp_path / 'data', critic_patience=0), str(off))
    console = capsys.readouterr().out
    state = _final_state(off)
    assert 'critic_watch' not in state
    assert _updates(state['critic_opt_state']) == C + G * 2
    lines = _lines(off)
    assert [r['step'] for r in lines] == list(range(1, P + C + G + 1))
    assert not any(k in r for r in lines for k in ('critic_updates', 'critic_stopped_at', 'val_auc_best'))
    assert all('wasserstein' in r for r in lines if r['phase'] == 'critic')
    rec = json.loads((off / 'metrics' / 'critic_pretraining.json').read_text())
    assert rec['steps_run'] == C and not rec['stopped_by_rule']
    assert rec['val_auc'] == pytest.approx(0.9) and rec['passed'] is True
    assert 'critic pretraining: 16 updates; val_auc 0.9000' in console and 'WARNING: the critic' not in console

    wd = tmp_path / 'stop'
    with pytest.raises(trainer.RunError, match=r'val_auc 0\.6140 < aos4rec\.critic_auc_bar 0\.7'):
        trainer.train_and_evaluate(_config(tmp_path / 'data', critic_below_bar='stop'), str(wd))
    assert not any(json.loads(l)['phase'] == 'gan' for l in open(wd / 'metrics' / 'train.jsonl'))
    assert not (wd / 'metrics' / 'test.json').exists()
    trainer.train_and_evaluate(_config(tmp_path / 'data', critic_below_bar='warn'), str(wd))
    assert 'WARNING: the critic reached val_auc 0.6140' in capsys.readouterr().out
    assert (wd / 'metrics' / 'test.json').exists()


@pytest.mark.slow
def test_keep_best_starts_the_ssrgan_phase_from_the_best_measured_critic_and_resumes_identical(
        tmp_path, constructed_auc, monkeypatch, capsys):
    """aos4rec.critic_keep_best: the same constructed AUCs stop the rule at step 18, but the
    critic that goes on is the one measured best, at step 12 (0.61), with its optimizer state:
    Adam's count at the end is its 8 pretraining updates plus the G rounds' (14 + G * 2 without
    the option); the bar is checked on 0.61; a run stopped at 11 (before the best is copied), 13
    and 19 resumes to the same end, critic_best included."""
    full = tmp_path / 'full'
    trainer.train_and_evaluate(_config(tmp_path / 'data', critic_keep_best=True), str(full))
    console = capsys.readouterr().out
    state = _final_state(full)
    best_at = 12
    assert _updates(state['critic_opt_state']) == (best_at - P) + G * 2
    assert _updates(state['critic_best']['critic_opt_state']) == best_at - P
    rec = json.loads((full / 'metrics' / 'critic_pretraining.json').read_text())
    assert rec['stopped_by_rule'] and rec['steps_run'] == STOP - P
    assert rec['kept_critic_step'] == best_at and rec['val_auc'] == pytest.approx(0.61)
    assert rec['last_val_auc'] == pytest.approx(0.614) and rec['passed'] is False
    assert (f'the critic of step {best_at} (val_auc 0.6100, the best measured; the last was '
            '0.6140) goes on into the SSRGAN phase') in console
    assert 'WARNING: the critic reached val_auc 0.6100 < aos4rec.critic_auc_bar 0.7' in console

    wd = tmp_path / 'stopped'
    for at in (best_at - 1, best_at + 1, STOP + 1):
        with monkeypatch.context() as m:
            m.setattr(preemption, 'Watcher', lambda at=at: StopAt(at))
            with pytest.raises(preemption.Stopped):
                trainer.train_and_evaluate(_config(tmp_path / 'data', critic_keep_best=True), str(wd))
    trainer.train_and_evaluate(_config(tmp_path / 'data', critic_keep_best=True), str(wd))
    other = _final_state(wd)
    for key in ('params', 'opt_state', 'critic', 'critic_opt_state', 'critic_watch', 'critic_best',
                'rng'):
        la, lb = jax.tree_util.tree_leaves(state[key]), jax.tree_util.tree_leaves(other[key])
        assert len(la) == len(lb) > 0
        for x, y in zip(la, lb):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=key)
    assert _lines(wd) == _lines(full)
    read = lambda p: json.loads(p.read_text())
    assert read(full / 'metrics' / 'test.json') == read(wd / 'metrics' / 'test.json')


@pytest.mark.slow
def test_critic_auc_paired_is_what_the_rule_and_keep_best_read(tmp_path, monkeypatch, capsys):
    """aos4rec.critic_auc='paired': the constructed AUCs are now val_auc_paired's, and the pooled
    val_auc is a constant 0.95 that would pass the bar: the rule stops at step 18 as in the
    pooled test, keeps the critic of step 12 (0.61), and the bar fails on 0.61; the record and
    the log name val_auc_paired."""
    construct_auc(monkeypatch, 'val_auc_paired', val_auc=0.95)
    wd = tmp_path / 'paired'
    trainer.train_and_evaluate(_config(tmp_path / 'data', critic_keep_best=True, critic_auc='paired'),
                               str(wd))
    console = capsys.readouterr().out
    rec = json.loads((wd / 'metrics' / 'critic_pretraining.json').read_text())
    assert rec['auc'] == 'val_auc_paired' and rec['stopped_by_rule'] and rec['steps_run'] == STOP - P
    assert rec['kept_critic_step'] == 12 and rec['val_auc'] == pytest.approx(0.61)
    assert rec['passed'] is False
    assert 'WARNING: the critic reached val_auc_paired 0.6100 < aos4rec.critic_auc_bar 0.7' in console
    crit = [json.loads(l) for l in open(wd / 'metrics' / 'train.jsonl')]
    pooled = [r['val_auc'] for r in crit if r['phase'] == 'critic' and 'val_auc' in r]
    assert pooled and all(v == pytest.approx(0.95) for v in pooled)
    c = _config(tmp_path / 'data', critic_auc='both')
    with pytest.raises(config_lib.ConfigError, match='aos4rec.critic_auc'):
        config_lib.validate(c)
