"""End-to-end runs through train_and_evaluate / main.py on tiny configs (CPU)."""
import json
import os
import subprocess
import sys

import pytest

from aos4rec_jax import config as config_lib
from aos4rec_jax import metrics_ref
from aos4rec_jax import trainer
from experiments.configs import poprec as poprec_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), 'shared', 'data')


def read_json(path):
    with open(path) as f:
        return json.load(f)


def assert_predictions_agree(workdir):
    """The metrics files equal what the predictions file gives, recomputed by metrics_ref."""
    got = read_json(os.path.join(workdir, 'metrics', 'test.json'))
    re = metrics_ref.summarize_predictions(os.path.join(workdir, 'predictions', 'test.parquet'))
    assert re['users'] == got['users']
    for proto in ('sampled', 'full'):
        assert set(re[proto]) == set(got[proto])
        for k, v in re[proto].items():
            assert got[proto][k] == pytest.approx(v, abs=1e-6), (proto, k)


def test_poprec_synthetic_end_to_end(tmp_path):
    c = poprec_cfg.get_config('tiny')
    res = trainer.train_and_evaluate(c, str(tmp_path))
    for f in ('config.json', 'dataset.json', 'metrics/valid.json', 'metrics/test.json',
              'predictions/test.parquet'):
        assert (tmp_path / f).exists(), f
    test = read_json(tmp_path / 'metrics' / 'test.json')
    assert set(test['sampled']) == {f'{m}@10' for m in ('prec', 'ndcg', 'bleu', 'hr', 'mrr')}
    assert test['users'] == res['test']['users'] > 0
    # the synthetic dataset reports the oracle's NLL of the lists and of the true continuations
    assert set(test['nll_oracle']) == {'sampled', 'full', 'target'}
    assert_predictions_agree(str(tmp_path))
    # same seed, same result
    res2 = trainer.train_and_evaluate(c, str(tmp_path / 'again'))
    assert res2['test']['sampled'] == res['test']['sampled']


def test_config_validation_names_the_field():
    c = poprec_cfg.get_config('tiny')
    c.decode.beam_size = 0
    with pytest.raises(config_lib.ConfigError, match='decode.beam_size'):
        config_lib.validate(c)
    c = poprec_cfg.get_config('tiny')
    c.select_by = 'luck'
    with pytest.raises(config_lib.ConfigError, match='select_by'):
        config_lib.validate(c)
    c = poprec_cfg.get_config('tiny')
    c.model = 'nope'
    with pytest.raises(config_lib.ConfigError, match='config.model'):
        config_lib.validate(c)


def run_main(args, **kw):
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1')
    return subprocess.run([sys.executable, os.path.join(ROOT, 'main.py')] + args, cwd=ROOT, env=env,
                          capture_output=True, text=True, **kw)


def test_main_rejects_unknown_key_and_bad_value(tmp_path):
    r = run_main(['--config=experiments/configs/poprec.py:tiny', f'--workdir={tmp_path}',
                  '--config.no_such_key=3'])
    assert r.returncode != 0 and 'no_such_key' in r.stderr
    r = run_main(['--config=experiments/configs/poprec.py:tiny', f'--workdir={tmp_path}',
                  '--config.decode.strategy=telepathy'])
    assert r.returncode == 1 and 'decode.strategy' in r.stderr


@pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason='../shared/data not present')
def test_poprec_real_data_via_cli(tmp_path):
    yc = os.path.join(SHARED_DATA, 'yoochoose')
    prep = subprocess.run(
        [sys.executable, '-m', 'data_prep', '--format', 'session-tsv', '--profile', 'yoochoose',
         '--input', os.path.join(yc, 'yoochoose-clicks-100k_train_full.txt.gz'),
         os.path.join(yc, 'yoochoose-clicks-100k_test.txt.gz'), '--output', str(tmp_path / 'yc')],
        cwd=ROOT, capture_output=True, text=True)
    assert prep.returncode == 0, prep.stderr
    r = run_main(['--config=experiments/configs/poprec.py', f'--workdir={tmp_path / "run"}',
                  f'--config.data_dir={tmp_path / "yc"}'])
    assert r.returncode == 0, r.stderr[-3000:]
    test = read_json(tmp_path / 'run' / 'metrics' / 'test.json')
    assert set(test['sampled']) == {f'{m}@6' for m in ('prec', 'ndcg', 'bleu', 'hr', 'mrr')}
    assert 'nll_oracle' not in test
    assert_predictions_agree(str(tmp_path / 'run'))


def test_resume_check_fills_fields_added_later_one_by_one(tmp_path):
    """A run made before a field existed (here aos4rec.gan_adv_weight, and select_by) resumes with
    the field's default; a changed training setting is still refused, naming the field."""
    from experiments.configs import aos4rec as aos_cfg
    cfg = aos_cfg.get_config('tiny').to_dict()
    old = json.loads(json.dumps(cfg))
    del old['aos4rec']['gan_adv_weight'], old['select_by']
    (tmp_path / 'config.json').write_text(json.dumps(old))
    trainer._check_resume_config(str(tmp_path), cfg)          # no error
    cfg['aos4rec']['gan_adv_weight'] = 0.5
    with pytest.raises(trainer.RunError, match='aos4rec.gan_adv_weight'):
        trainer._check_resume_config(str(tmp_path), cfg)
