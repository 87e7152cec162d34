"""Phase entry is the trainer's: a phase with `validate_on_entry` and no enter hook is validated at
its first step, the trainer records its `entered_key` (default 'entered_<name>') in the checkpoint
meta, and a run resumed from the checkpoint saved at that step does not validate the start again."""
import os
import shutil

import pytest

from aos4rec_jax import checkpoint as ckpt_lib
from aos4rec_jax import methods
from aos4rec_jax import trainer
from aos4rec_jax.methods.base import Phase
from experiments.configs import bpr as bpr_cfg
from tests.helpers import valid_history


def _step(state, data):
    return state, {}


def test_phase_defaults_its_entered_key_and_refuses_an_entry_validation_without_validation():
    ph = Phase('gan', 3, _step)
    assert ph.entered_key == 'entered_gan' and not ph.has_entry
    assert Phase('gan', 3, _step, validate_on_entry=True).has_entry
    assert Phase('gan', 3, _step, enter=lambda s, c: (s, c.meta)).has_entry
    assert Phase('gan', 3, _step, entered_key='seqgan_gan_entered').entered_key == 'seqgan_gan_entered'
    with pytest.raises(ValueError, match="'critic': validate_on_entry needs validate=True"):
        Phase('critic', 3, _step, validate=False, validate_on_entry=True)


def _entry_validating(base):
    """`base` with its one phase validating its start, without an enter hook."""
    class EntryValidating(base):
        def phases(self, mesh):
            return [Phase(ph.name, ph.steps, ph.step_fn, examples_per_step=ph.examples_per_step,
                          epoch_examples=ph.epoch_examples, validate_on_entry=True)
                    for ph in super().phases(mesh)]
    return EntryValidating


def test_a_phase_without_enter_hook_validates_its_start_once(tmp_path, monkeypatch, capsys):
    c = bpr_cfg.get_config('tiny')
    c.train_steps, c.log_every, c.eval_every, c.checkpoint_every = 20, 10, 10, 20
    c.max_eval_users = 32
    reg = methods._discover()
    monkeypatch.setitem(reg, c.model, _entry_validating(reg[c.model]))
    wd = str(tmp_path / 'run')
    trainer.train_and_evaluate(c, wd)
    log = capsys.readouterr().out
    assert 'valid @ step 0 (train phase start)' in log
    valid = valid_history(wd)
    assert [(v['step'], v['phase'], bool(v.get('at_entry'))) for v in valid] == [
        (0, 'train', True), (10, 'train', False), (20, 'train', False)]
    ck = ckpt_lib.Checkpointer(wd)
    try:
        steps = list(ck.state_mgr.all_steps())
        _, meta0 = ck.restore(0, None)       # saved right after the entry
    finally:
        ck.close()
    assert steps == [0, 20] and meta0['entered_train'] == 0
    # the run resumed from that checkpoint: entered already, so the start is not validated again
    for s in steps:
        if s != 0:
            shutil.rmtree(os.path.join(wd, 'checkpoints', str(s)))
    trainer.train_and_evaluate(c, wd)
    log = capsys.readouterr().out
    assert 'resumed from checkpoint step 0' in log
    assert 'phase start)' not in log
    assert [(v['step'], bool(v.get('at_entry'))) for v in valid_history(wd)] == [
        (0, True), (10, False), (20, False)]
