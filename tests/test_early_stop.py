"""config.early_stop_patience: the run ends after N validations in a row without a better score
(in its last phase), saves that step, and the same command then has nothing left to train; a
larger patience (or 0) on the same workdir trains on."""
import json
import os

import pytest

from aos4rec_jax import checkpoint as ckpt_lib
from aos4rec_jax import config as config_lib
from aos4rec_jax import trainer
from experiments.configs import transformer as tf_cfg


def _lines(workdir, name):
    with open(os.path.join(workdir, 'metrics', name)) as f:
        return [json.loads(l) for l in f if l.strip()]


def _config(patience):
    c = tf_cfg.get_config('tiny')
    c.train_steps, c.eval_every, c.log_every, c.checkpoint_every = 60, 10, 10, 60
    c.max_eval_users = 0
    # A learning rate too small to move any ranking: every validation after the first equals it,
    # and an equal score is not a better one, so the count rises by one per validation.
    c.learning_rate = 1e-9
    c.early_stop_patience = patience
    return c


def _latest_step(workdir):
    ck = ckpt_lib.Checkpointer(workdir)
    try:
        return ck.latest_step()
    finally:
        ck.close()


# saved, stopped and resumed on the trainer's default mesh, all 8 fake devices (tests/conftest.py)
@pytest.mark.all_devices
def test_early_stop_ends_the_run_and_the_same_command_resumes_to_the_same_end(tmp_path, capsys):
    wd = str(tmp_path / 'run')
    trainer.train_and_evaluate(_config(2), wd)
    hist = _lines(wd, 'valid_history.jsonl')
    assert [r['step'] for r in hist] == [10, 20, 30]        # 10 best, 20 and 30 no better: stop
    (ndcg,) = [k for k in hist[0] if k.startswith('sampled/ndcg@')]
    assert len({r[ndcg] for r in hist}) == 1, hist         # the premise: equal scores
    assert _lines(wd, 'train.jsonl')[-1]['step'] == 30
    assert _latest_step(wd) == 30                           # the stop step is saved
    out = capsys.readouterr().out
    assert 'early stop at step 30/60: 2 validations in a row without a better ndcg' in out
    test1 = json.load(open(os.path.join(wd, 'metrics', 'test.json')))

    # the same command: resumes at 30, trains nothing, evaluates the same kept parameters
    trainer.train_and_evaluate(_config(2), wd)
    assert [r['step'] for r in _lines(wd, 'valid_history.jsonl')] == [10, 20, 30]
    assert json.load(open(os.path.join(wd, 'metrics', 'test.json'))) == test1
    assert 'nothing left to train' in capsys.readouterr().out

    # patience 0 on the same workdir (a resumable change): trains on to the last step
    trainer.train_and_evaluate(_config(0), wd)
    assert [r['step'] for r in _lines(wd, 'valid_history.jsonl')] == [10, 20, 30, 40, 50, 60]
    assert _latest_step(wd) == 60


def test_early_stop_patience_is_checked():
    c = _config(3)
    c.eval_every = 0
    with pytest.raises(config_lib.ConfigError, match='early_stop_patience.*eval_every'):
        config_lib.validate(c)
    c = _config(-1)
    with pytest.raises(config_lib.ConfigError, match='early_stop_patience: must be >= 0'):
        config_lib.validate(c)
    c = _config(2)
    c.select_by = 'last'
    with pytest.raises(config_lib.ConfigError, match='early_stop_patience'):
        config_lib.validate(c)
