"""aos4rec.gan_start_competes: the generator that starts the SSRGAN phase is validated when the
first round begins (Phase.validate_on_entry) and is kept unless a round validates better; off,
model selection restarts with the first round (what runs before the option did)."""
import numpy as np
import pytest

from aos4rec_jax import checkpoint as ckpt_lib
from aos4rec_jax import ssrgan
from aos4rec_jax import trainer
from tests.helpers import run_summary, valid_history
from tests.test_ssrgan import tiny_config


def _frozen_generator(c):
    # a learning rate far below float32's resolution of the parameters: every SSRGAN round
    # leaves the generator bit-identical, so every validation of the phase scores the same
    c.aos4rec.g_learning_rate = 1e-20
    c.aos4rec.gan_steps = 4
    c.eval_every = 2
    c.checkpoint_every = 2
    return c


@pytest.mark.slow
def test_the_start_is_kept_when_no_round_beats_it_and_not_when_the_option_is_off(tmp_path, capsys):
    c = _frozen_generator(tiny_config('gru', 'tiny,adver'))
    assert c.aos4rec.gan_start_competes             # experiments/configs/aos4rec.py turns it on
    on = str(tmp_path / 'on')
    res_on = trainer.train_and_evaluate(c, on)
    P, C, G = ssrgan.schedule(c)
    valid = valid_history(on)
    entry = [v for v in valid if v.get('at_entry')]
    assert [(v['step'], v['phase']) for v in entry] == [(P + C, 'gan')]
    gan = [v for v in valid if v['phase'] == 'gan' and not v.get('at_entry')]
    assert [v['step'] for v in gan] == [P + C + 2, P + C + 4]
    key = next(k for k in entry[0] if k.startswith('sampled/ndcg@'))
    # the generator did not move, so the rounds score exactly what the start scored ...
    assert all(v[key] == entry[0][key] for v in gan)
    # ... and the start is what the seq2seq phase kept: the same validation as its best
    s2s_best = max(v[key] for v in valid if v['phase'] == 'seq2seq')
    assert entry[0][key] == s2s_best
    # a tie is no improvement: the start stays kept
    summ = run_summary(on)
    assert summ['kept_step'] == P + C
    assert 'the gan phase started from' in summ['kept_why']
    ck = ckpt_lib.Checkpointer(on)
    assert ck.best_step() == P + C
    ck.close()
    log = capsys.readouterr().out
    assert f'valid @ step {P + C} (gan phase start)' in log
    assert 'gan phase start)' in log.split('parameters kept for evaluation')[1].splitlines()[0]

    # off: selection restarts with the first round, which is kept (the paper-row runs before
    # the option); the same generator, so the same test figures
    c2 = _frozen_generator(tiny_config('gru', 'tiny,adver'))
    c2.aos4rec.gan_start_competes = False
    c2.train_steps = 0
    c2.aos4rec.init_from = on
    off = str(tmp_path / 'off')
    res_off = trainer.train_and_evaluate(c2, off)
    valid_off = valid_history(off)
    assert not any(v.get('at_entry') for v in valid_off)
    assert [v['step'] for v in valid_off] == [C + 2, C + 4]
    assert run_summary(off)['kept_step'] == C + 2
    np.testing.assert_allclose(res_off['test']['sampled'][key.split('/')[1]],
                               res_on['test']['sampled'][key.split('/')[1]], rtol=0, atol=0)
