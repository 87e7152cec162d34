"""experiments/ablation.py: the jobs of the ablation, their order and their commands."""
import json
import os
import sys

import pytest

from experiments import ablation


def prepared(tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    (d / 'protocol.json').write_text(json.dumps({'k': 10}))
    return str(d)


def test_jobs_and_dependencies(tmp_path):
    d = prepared(tmp_path, 'ds')
    out = tmp_path / 'runs'
    args = ['--out', str(out), '--data', f'ds={d}', '--steps', 'ds=7,3,2', '--models', 'gru',
            '--seeds', '4', '--set', 'model_kwargs.embed_dim=16']
    import argparse
    jobs = ablation.build_jobs(argparse.Namespace(out=str(out), data=[f'ds={d}'],
                                                  steps=['ds=7,3,2'], models='gru', seeds='4',
                                                  set=['model_kwargs.embed_dim=16'],
                                                  rows='base,oracle,adver,both,beam1'))
    by = {j.name.split('/')[-1]: j for j in jobs}
    assert list(by) == ['base', 'oracle', 'adver', 'both', 'beam1']
    assert by['base'].after is None and by['oracle'].after is None
    assert by['adver'].after == 'ds/gru/seed4/base' and by['both'].after == 'ds/gru/seed4/oracle'
    assert by['beam1'].after == 'ds/gru/seed4/both'
    base = ' '.join(by['base'].cmd)
    assert 'aos4rec.py:base' in base and '--config.train_steps=7' in base
    assert '--config.seed=4' in base and '--config.model=gru' in base
    assert '--config.model_kwargs.embed_dim=16' in base
    both = ' '.join(by['both'].cmd)
    assert 'aos4rec.py:both' in both and '--config.train_steps=0' in both
    assert f'--config.aos4rec.init_from={out}/ds/gru/seed4/oracle' in both
    assert '--config.aos4rec.critic_pretrain_steps=3' in both and '--config.aos4rec.gan_steps=2' in both
    assert by['beam1'].done_file.endswith('both/metrics/test_beam1.json')
    assert '--strategy=greedy' in by['beam1'].cmd
    assert ablation.main(args + ['--dry_run']) == 0
    assert ablation.main(args + ['--dry_run', '--rows', 'base,adver']) == 0
    with pytest.raises(SystemExit, match='lacks the row it starts from'):
        ablation.main(args + ['--dry_run', '--rows', 'adver'])


def test_bad_arguments_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit, match='not a prepared dataset'):
        ablation.main(['--out', str(tmp_path), '--data', f'x={tmp_path}/none', '--steps', 'x=1,1,1'])
    d = prepared(tmp_path, 'ds')
    with pytest.raises(SystemExit, match='--steps ds=P,C,G is missing'):
        ablation.main(['--out', str(tmp_path), '--data', f'ds={d}', '--steps', 'ds=1,1'])


def test_failed_job_skips_its_dependents(tmp_path):
    """A job that fails (here: a command that exits 1) is reported; the jobs after it are skipped."""
    jobs = [ablation.Job('a', str(tmp_path / 'a'), [sys.executable, '-c', 'raise SystemExit(1)'],
                         str(tmp_path / 'a.log'), str(tmp_path / 'a.done'), None),
            ablation.Job('b', str(tmp_path / 'b'), [sys.executable, '-c', 'print(1)'],
                         str(tmp_path / 'b.log'), str(tmp_path / 'b.done'), 'a'),
            ablation.Job('c', str(tmp_path / 'c'),
                         [sys.executable, '-c', f'open({str(tmp_path / "c.done")!r}, "w")'],
                         str(tmp_path / 'c.log'), str(tmp_path / 'c.done'), None)]
    assert ablation.run(jobs, workers=2) == 1
    assert [j.status for j in jobs] == ['failed', 'skipped', 'done']
    assert os.path.exists(tmp_path / 'c.done')
