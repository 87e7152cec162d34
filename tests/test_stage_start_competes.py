"""seqgan.start_competes, irgan.start_competes, crr.start_competes: the generator (policy) that
starts the second stage's updates is validated when that stage begins (Phase.validate_on_entry,
as AOS4Rec's aos4rec.gan_start_competes) and is kept unless an update validates better; off (the
methods' default, what every run before the option did), model selection restarts with the
stage's first validation. The experiments configs turn it on; an older run folder, whose
config.json lacks the option, still resumes."""
import importlib
import json

import jax
import numpy as np
import pytest

from aos4rec_jax import checkpoint as ckpt_lib
from aos4rec_jax import trainer
from aos4rec_jax.methods import seqgan as seqgan_method
from aos4rec_jax.methods.base import RunError
from aos4rec_jax.methods.crr import CRR
from aos4rec_jax.methods.irgan import IRGAN
from experiments import table3
from experiments.configs import crr as crr_cfg
from experiments.configs import irgan as irgan_cfg
from experiments.configs import seqgan as seqgan_cfg
from tests.helpers import run_summary, valid_history


def _seqgan(c):
    c.seqgan.d_pretrain_steps = 2
    c.seqgan.gan_steps = 4
    c.seqgan.num_rollouts = 2
    c.seqgan.d_steps = 1
    c.seqgan.g_learning_rate = 1e-20
    return c


def _irgan(c):
    c.irgan.gan_steps = 4
    c.irgan.g_learning_rate = 1e-20
    return c


def _crr(c):
    c.crr.crr_steps = 4
    c.crr.policy_lr = 1e-20
    return c


# method: (its config file, first phase, second phase, the second stage of 4 steps with the
# generator's (policy's) optimizer frozen, the evaluated network in state['params'] (None: all),
# the second phase's first step for train_steps 4)
METHODS = {
    'seqgan': (seqgan_cfg, 'seq2seq', 'gan', _seqgan, None, 4 + 2),
    'irgan': (irgan_cfg, 'pretrain', 'gan', _irgan, 'generator', 4),
    'crr': (crr_cfg, 'pretrain', 'crr', _crr, None, 4),
}


def _config(method, on):
    module, _, _, second_stage, _, _ = METHODS[method]
    c = module.get_config('tiny')
    assert c[method].start_competes                  # the experiments config turns it on
    # a learning rate far below float32's resolution of the parameters: every update of the
    # second stage leaves the evaluated network bit-identical, so each of its validations scores
    # what its start scored (the updates of the other players, D or the critic, go on)
    c = second_stage(c)
    c[method].start_competes = on
    c.train_steps = 4
    c.eval_every = 2
    c.checkpoint_every = 2
    c.log_every = 2
    c.max_eval_users = 32
    return c


def _evaluated(tree, net):
    return jax.tree_util.tree_leaves(tree if net is None else tree[net])


@pytest.mark.slow
@pytest.mark.parametrize('method', sorted(METHODS))
def test_the_start_is_kept_when_no_update_beats_it_and_not_when_the_option_is_off(
        method, tmp_path, capsys):
    _, first, second, _, net, P = METHODS[method]
    on = str(tmp_path / 'on')
    if method == 'seqgan':
        # stopped after 2 of its 4 rounds and resumed mid-'gan': the resumed run does not enter
        # the phase again (no second start validation)
        c = _config(method, True)
        c.seqgan.gan_steps = 2
        trainer.train_and_evaluate(c, on)
        entered = capsys.readouterr().out
        res_on = trainer.train_and_evaluate(_config(method, True), on)
        log = capsys.readouterr().out
        assert f'resumed from checkpoint step {P + 2}' in log
        assert 'phase start)' not in log.split('parameters kept for evaluation')[0]
        assert 'competes in model selection' not in log
    else:
        res_on = trainer.train_and_evaluate(_config(method, True), on)
        entered = log = capsys.readouterr().out
    assert f'valid @ step {P} ({second} phase start)' in entered
    valid = valid_history(on)
    entry = [v for v in valid if v.get('at_entry')]
    assert [(v['step'], v['phase']) for v in entry] == [(P, second)]
    assert [(v['step'], v['phase']) for v in valid if not v.get('at_entry')] == (
        [(2, first), (4, first), (P + 2, second), (P + 4, second)])
    key = next(k for k in entry[0] if k.startswith('sampled/ndcg@'))
    later = [v for v in valid if v['phase'] == second and not v.get('at_entry')]
    # the network did not move, so the updates score exactly what the start scored ...
    assert all(v[key] == entry[0][key] for v in later)
    # ... and the start is what the first stage kept: the same score as its best validation
    assert entry[0][key] == max(v[key] for v in valid if v['phase'] == first)
    # a tie is no improvement: the start stays kept, and the summary says so
    summ = run_summary(on)
    assert summ['kept_step'] == P
    assert f'the {second} phase started from' in summ['kept_why']
    ck = ckpt_lib.Checkpointer(on)
    try:
        assert ck.best_step() == P
        kept, kept_meta = ck.restore_best(None)
        last, last_meta = ck.restore(ck.latest_step(), None)
    finally:
        ck.close()
    assert kept_meta['best_phase'] == f'{second} phase start'
    # the premise: the frozen stage left the evaluated network as it started; bit-identical,
    # but for a parameter at exactly 0, which one Adam step moves by about the rate (1e-20)
    for x, y in zip(_evaluated(kept, net), _evaluated(last['params'], net), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        np.testing.assert_array_equal(np.where(x == 0, 0, y), x)
        assert np.all(np.abs(y[x == 0]) < 1e-18)
    if method == 'seqgan':
        assert last_meta['seqgan_gan_entered'] == P
    kept_line = log.split('parameters kept for evaluation')[1].splitlines()[0]
    assert f'{second} phase start)' in kept_line

    # off: selection restarts with the stage's first validation, which is kept; the same network,
    # so the same test figures
    off = str(tmp_path / 'off')
    res_off = trainer.train_and_evaluate(_config(method, False), off)
    valid_off = valid_history(off)
    assert not any(v.get('at_entry') for v in valid_off)
    assert [(v['step'], v['phase']) for v in valid_off] == (
        [(2, first), (4, first), (P + 2, second), (P + 4, second)])
    summ_off = run_summary(off)
    assert summ_off['kept_step'] == P + 2
    assert 'started from' not in summ_off['kept_why']
    ck = ckpt_lib.Checkpointer(off)
    try:
        assert ck.best_step() == P + 2
        _, meta_off = ck.restore(ck.latest_step(), None)
    finally:
        ck.close()
    # off, SeqGAN's 'gan' phase has no enter hook: the checkpoint meta is what it was before
    assert 'seqgan_gan_entered' not in meta_off
    assert res_off['test'] == res_on['test']


# ------------------------------------------------------------------------------ the configs
CONFIGS = {'seqgan': seqgan_cfg, 'irgan': irgan_cfg, 'crr': crr_cfg}
DEFAULTS = {'seqgan': seqgan_method.OPTIONS, 'irgan': IRGAN.OPTIONS, 'crr': CRR.OPTIONS}
ADDED_LATER = {'seqgan': seqgan_method.SeqGAN.OPTIONS_ADDED_LATER,
               'irgan': IRGAN.OPTIONS_ADDED_LATER, 'crr': CRR.OPTIONS_ADDED_LATER}


def test_the_experiments_configs_turn_it_on_and_the_methods_defaults_are_off():
    for method, module in CONFIGS.items():
        assert DEFAULTS[method]['start_competes'] is False, method
        assert ADDED_LATER[method]['start_competes'] is False, method
        for variant in ['', *module.VARIANTS]:
            assert module.get_config(variant)[method].start_competes is True, (method, variant)
    # the Table 3 rows of the three methods run those configs and do not turn it off
    for row, method in (('recgan', 'seqgan'), ('irgan', 'irgan'), ('crr', 'crr')):
        r = table3.ROWS[row]
        c = importlib.import_module(f'experiments.configs.{r.config}').get_config(r.variant)
        assert c.model == method and c[method].start_competes is True, row
        sets = list(r.sets) + [kv for pairs in r.per_dataset.values() for kv in pairs]
        assert not [k for k, _ in sets if k.endswith('start_competes')], row


@pytest.mark.parametrize('method', sorted(CONFIGS))
def test_an_older_run_without_the_option_resumes_as_it_was_and_turning_it_on_is_refused(
        method, tmp_path):
    """config.json of a run from before the option lacks it: resumed with the option off it is
    the same config (OPTIONS_ADDED_LATER); the experiments config's True is a different one."""
    cfg = CONFIGS[method].get_config('tiny').to_dict()
    old = json.loads(json.dumps(cfg))
    del old[method]['start_competes']
    (tmp_path / 'config.json').write_text(json.dumps(old))
    with pytest.raises(RunError, match=f'{method}.start_competes: False -> True'):
        trainer._check_resume_config(str(tmp_path), cfg)
    cfg[method]['start_competes'] = False
    trainer._check_resume_config(str(tmp_path), cfg)
