"""The table drivers (experiments/table3.py, strategies_table.py, oracle_nll_table.py, and
next_item_table.py on the shared helpers of experiments/_runs.py): the commands of --dry-run,
the cells, paper figures, ratios, not-run lists and rank-order section of --collect-only on
hand-written metrics files. No training, except the one smoke run (PopRec, no training steps)."""
import csv
import glob
import json
import os
import re
import shlex
import sys

import pytest

from experiments import _runs
from experiments import next_item_table
from experiments import oracle_nll_table
from experiments import strategies_table
from experiments import table3

ROOT = _runs.ROOT


def _write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(obj, f)


def _metrics(k, sampled, full=None, strategy='topk', nll=None):
    """A metrics/test.json: sampled / full = (prec, ndcg, bleu)."""
    full = full or sampled
    out = {'users': 5, 'decode': {'strategy': strategy, 'beam_size': 5},
           'sampled': {f'prec@{k}': sampled[0], f'ndcg@{k}': sampled[1], f'bleu@{k}': sampled[2],
                       f'hr@{k}': 0.5, f'mrr@{k}': 0.25},
           'full': {f'prec@{k}': full[0], f'ndcg@{k}': full[1], f'bleu@{k}': full[2],
                    f'hr@{k}': 0.4, f'mrr@{k}': 0.2}}
    if nll is not None:
        out['nll_oracle'] = nll
    return out


def _lines(capsys):
    return [l for l in capsys.readouterr().out.splitlines() if l]


# ------------------------------------------------------------------------------ _runs

def test_rank_helpers_by_hand():
    assert _runs.ranks([3, 1, 2, 2]) == [4, 1, 2.5, 2.5]
    # ranks 1, 2.5, 2.5, 4 against 1, 2, 3, 4: 4.5 / sqrt(4.5 * 5)
    assert _runs.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)
    assert _runs.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    assert _runs.spearman([1, 1], [1, 2]) is None and _runs.spearman([1], [1]) is None
    assert _runs.inverted_pairs(['a', 'b', 'c'], [1, 3, 2], [3, 2, 1]) == [('a', 'b'), ('a', 'c')]
    assert _runs.inverted_pairs(['a', 'b'], [1, 1], [2, 1]) == []          # a tie is not inverted
    assert _runs.fmt([]) == 'n/a' and _runs.fmt([0.5]) == '0.5000'
    assert _runs.fmt([0.1, 0.3], 2) == '0.20 ± 0.14'
    assert _runs.mean_std([2.0]) == (2.0, '') and _runs.mean_std([]) == ('', '')
    assert _runs.ratio_text(0.5, 0.25) == ' (2.00x)' and _runs.ratio_text('', 0.2) == ''


def test_set_targets_may_name_a_variant_and_bad_ones_are_refused():
    def error(msg):
        raise ValueError(msg)
    sets = _runs.parse_sets(['*:eval_every=200', 'sasrec:s3rec@Toys_and_Games:train_steps=16000',
                             'sasrec:model_kwargs.dropout_rate=0.2', 'gpt@LastFM:decode.strategy=a:b'],
                            error)
    assert sets == {'*': [('eval_every', '200')],
                     'sasrec:s3rec@Toys_and_Games': [('train_steps', '16000')],
                     'sasrec': [('model_kwargs.dropout_rate', '0.2')],
                     'gpt@LastFM': [('decode.strategy', 'a:b')]}
    assert _runs.overrides_for(sets, 'sasrec:s3rec', 'Toys_and_Games') == [
        ('eval_every', '200'), ('train_steps', '16000')]
    assert _runs.overrides_for(sets, 'sasrec', 'Toys_and_Games') == [
        ('eval_every', '200'), ('model_kwargs.dropout_rate', '0.2')]
    for bad in ('sasrec', 'sasrec=1', ':x=1', 'sasrec:=1'):
        with pytest.raises(ValueError, match='expected MODEL'):
            _runs.parse_sets([bad], error)


def test_write_atomic_leaves_no_temporary_file(tmp_path):
    p = tmp_path / 'sub' / 'x.md'
    _runs.write_atomic(str(p), 'a\n')
    _runs.write_atomic(str(p), 'b\n')
    assert p.read_text() == 'b\n' and os.listdir(tmp_path / 'sub') == ['x.md']


def test_a_failed_run_is_reported_and_an_interrupted_one_stops_the_driver(tmp_path, capsys):
    rec = str(tmp_path / 'commands.log')
    fail = [sys.executable, '-c', 'import sys; sys.exit(3)']
    assert _runs.run_logged(fail, str(tmp_path / 'a'), record=rec, graceful=True) == 3
    assert f'failed (exit 3): see {tmp_path}/a/run.log' in capsys.readouterr().out
    stopped = [sys.executable, '-c', 'import sys; sys.exit(143)']       # main.py after a SIGTERM
    with pytest.raises(SystemExit) as e:
        _runs.run_logged(stopped, str(tmp_path / 'b'), record=rec, graceful=True)
    assert e.value.code == 143 and 'interrupted (exit 143)' in capsys.readouterr().out
    log = open(rec).read().splitlines()
    assert [l.split()[2] for l in log] == ['start', 'exit', 'start', 'exit']
    assert log[1].endswith(f'exit 3 {tmp_path}/a') and log[3].endswith(f'exit 143 {tmp_path}/b')


# ------------------------------------------------------------------------------ next_item_table

NEXT_ITEM_MD = """# Next-item baselines (leave-one-out)

Made by `python -m experiments.next_item_table ARGS`; seeds 0,1,2; mean ± std over the seeds. "published": the S3-Rec paper (99 negatives) and repository (all items) on the same files, the public PyTorch SASRec on ml-1m-subset; (x) = our mean / the published figure. Per-run figures, dates and commands: next_item_runs.csv.

## 99 negatives (100 on ml-1m)

| model | dataset | seeds | HR@10 | published | NDCG@10 | published |
|---|---|---|---|---|---|---|
| poprec | Yelp | 1 | 0.3600 (1.00x) | 0.3609 | 0.2000 (1.00x) | 0.2007 |
| sasrec | LastFM | 2 | 0.4750 ± 0.0354 (1.01x) | 0.4706 | 0.2900 ± 0.0141 (1.05x) | 0.2755 |
| gru4rec:softmax | LastFM | 1 | 0.3000 (1.06x) | 0.2817 | 0.1500 (0.97x) | 0.155 |

## all items

| model | dataset | seeds | HR@10 | published | NDCG@10 | published |
|---|---|---|---|---|---|---|
| poprec | Yelp | 1 | 0.0100 (1.01x) | 0.0099 | 0.0050 (0.98x) | 0.0051 |
| sasrec | LastFM | 2 | 0.0650 ± 0.0071 (0.94x) | 0.0688 | 0.0325 ± 0.0035 (0.83x) | 0.039 |
| gru4rec:softmax | LastFM | 1 | 0.0400 (1.09x) | 0.0367 | 0.0200 (1.07x) | 0.0187 |

Not run yet (no finished run in the work root or the ledger): caser x LastFM, caser x Yelp, gru4rec:softmax x Yelp, poprec x LastFM, sasrec x Yelp.

How precise these figures are (the standard error of each published cell), what the shortfalls are, and runs made by hand: [next_item_notes.md](next_item_notes.md).

"""


def test_made_by_quotes_the_arguments_and_keeps_only_the_last_of_identical_sets():
    argv = ['--set', 'a:x=1', '--set', 'a:x=2', '--steps', '5', '--set', 'a:x=1', '--set', 'b:y=two words',
            '--set', 'a:x=2', '--set', 'b:y=two words']
    # a:x=1 (first), a:x=2 (first), b:y (first) are given again later: dropped; the order of the rest,
    # and so the value each key ends with (a:x=2), is kept
    assert _runs.made_by('experiments.t', argv) == (
        "python -m experiments.t --steps 5 --set a:x=1 --set a:x=2 --set 'b:y=two words'")
    assert _runs.made_by('experiments.t', ['--set', 'a:x=1', '--set', 'a:x=2']) == (
        'python -m experiments.t --set a:x=1 --set a:x=2')


def test_next_item_table_names_a_failed_run_keeps_the_others_and_exits_1(tmp_path, capsys, monkeypatch):
    work, data = _next_item_runs(tmp_path)
    calls = []

    def fake_run(cmd, workdir, graceful=False, **kw):
        calls.append((workdir, graceful))
        if '/Yelp/' in workdir:                                  # sasrec on Yelp fails
            return 3
        _write(os.path.join(workdir, 'metrics', 'test.json'),
               {'sampled': {'hr@10': 0.4, 'ndcg@10': 0.2}, 'full': {'hr@10': 0.05, 'ndcg@10': 0.02}})
        return 0

    monkeypatch.setattr(_runs, 'run_logged', fake_run)
    out = tmp_path / 'res'
    assert next_item_table.main(['--data-root', data, '--work-root', work, '--datasets', 'LastFM,Yelp',
                                 '--models', 'sasrec', '--seeds', '0,2', '--out-dir', str(out)]) == 1
    assert calls == [(f'{work}/sasrec/LastFM/seed2', True), (f'{work}/sasrec/Yelp/seed0', True),
                     (f'{work}/sasrec/Yelp/seed2', True)]
    assert capsys.readouterr().out.splitlines()[-1] == (
        f'2 run(s) failed, their cells are left out: {work}/sasrec/Yelp/seed0/run.log, '
        f'{work}/sasrec/Yelp/seed2/run.log')
    md = (out / 'next_item.md').read_text()
    assert '| sasrec | LastFM | 2 | 0.4500 ± 0.0707 (0.96x) | 0.4706 |' in md     # seed 0 (0.5) and the new seed 2
    assert 'Not run yet (no finished run in the work root or the ledger): sasrec x Yelp.' in md


def test_ensure_run_records_a_failed_run_and_the_drivers_exit_1_after_writing(tmp_path, capsys, monkeypatch):
    """Every driver that runs through `_runs.ensure_run` (table3, strategies, oracle NLL) names
    the runs that failed (or ended without their result) after writing its tables, and exits 1."""
    data = tmp_path / 'data'
    os.makedirs(data / 'ml-1m-paper')
    work, out = tmp_path / 'work', tmp_path / 'out'

    def fake_run(cmd, workdir, graceful=False, **kw):
        assert graceful
        if '/bpr/' in workdir:
            return 3                                            # BPR fails
        if '/caser/' in workdir:
            return 0                                            # Caser exits 0 without its result
        _write(os.path.join(workdir, 'metrics', 'test.json'),
               {s: {'prec@10': 0.1, 'ndcg@10': 0.1, 'bleu@10': 0.1} for s in ('sampled', 'full')})
        return 0

    monkeypatch.setattr(_runs, 'run_logged', fake_run)
    argv = ['--data-root', str(data), '--work-root', str(work), '--rows', 'poprec,bpr,caser',
            '--datasets', 'ml-1m-paper', '--seeds', '0', '--out-dir', str(out)]
    assert table3.main(argv) == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        f'2 run(s) failed, their results are left out: {work}/bpr/ml-1m-paper/seed0/run.log, '
        f'{work}/caser/ml-1m-paper/seed0/run.log')
    assert '| PopRec | poprec.py | 1 |' in (out / 'table3.md').read_text()
    # once every run has its result, the same command exits 0
    monkeypatch.setattr(_runs, 'run_logged', lambda cmd, workdir, **kw: _write(
        os.path.join(workdir, 'metrics', 'test.json'),
        {s: {'prec@10': 0.2, 'ndcg@10': 0.2, 'bleu@10': 0.2} for s in ('sampled', 'full')}) or 0)
    assert table3.main(argv) == 0
    assert 'failed' not in capsys.readouterr().out


def _job(tmp_path, name, code, done=None):
    """A fake run for run_deferred: `python -c CODE --workdir=WD` (workdir_of reads the flag)."""
    wd = str(tmp_path / name)
    cmd = [sys.executable, '-c', code, f'--workdir={wd}']
    return cmd, (done or (lambda: _runs.read_result(wd)))


def test_run_deferred_runs_n_at_once_records_and_notes_failures(tmp_path, capsys):
    """--workers 2: the queued runs start two at a time (the second before the first ends), each
    one's output goes to its run.log, starts and exits to the record; a run that exits 3 and one
    that exits 0 without its result are named by failure_status."""
    import argparse
    import time as time_mod
    rec = str(tmp_path / 'commands.log')
    write = ("import json, os, sys, time; wd = sys.argv[1].split('=', 1)[1]; "
             "open(os.path.join(wd, 'start'), 'w').write(repr(time.time())); time.sleep({s}); "
             "os.makedirs(os.path.join(wd, 'metrics'), exist_ok=True); "
             "json.dump({{'sampled': {{}}}}, open(os.path.join(wd, 'metrics', 'test.json'), 'w')); "
             "open(os.path.join(wd, 'end'), 'w').write(repr(time.time())); print('ran')")
    jobs = [_job(tmp_path, 'a', write.format(s=1.5)), _job(tmp_path, 'b', write.format(s=1.5)),
            _job(tmp_path, 'c', 'import sys; sys.exit(3)'), _job(tmp_path, 'd', 'pass')]
    args = argparse.Namespace(workers=2, dry_run=False, collect_only=False)
    assert _runs.start_deferring(args)
    for cmd, done in jobs:
        assert _runs.ensure_run(cmd, done, args, record=rec) is None      # queued, not run
    assert not os.path.exists(tmp_path / 'a') and len(args.defer_runs) == 4
    t0 = time_mod.time()
    _runs.run_deferred(args, poll_s=0.1)
    start_b = float((tmp_path / 'b' / 'start').read_text())
    assert start_b < float((tmp_path / 'a' / 'end').read_text())          # two at once
    assert time_mod.time() - t0 < 2 * 1.5 + 2.5
    assert (tmp_path / 'a' / 'run.log').read_text() == 'ran\n'
    log = open(rec).read().splitlines()
    assert sorted(l.split()[2] for l in log) == ['exit'] * 4 + ['start'] * 4
    assert f'exit 3 {tmp_path}/c' in '\n'.join(log)
    assert args.attempted_runs == {str(tmp_path / n) for n in 'abcd'}
    # the second pass: a finished run gives its result, a failed one is not run again
    assert _runs.ensure_run(jobs[0][0], jobs[0][1], args, record=rec) == {'sampled': {}}
    assert _runs.ensure_run(jobs[2][0], jobs[2][1], args, record=rec) is None
    assert len(open(rec).read().splitlines()) == 8
    assert _runs.failure_status(args) == 1
    out = capsys.readouterr().out
    head, _, named = out.splitlines()[-1].partition(': ')
    assert head == '2 run(s) failed, their results are left out'
    # in the order they ended: c and d end at once, so either comes first
    assert sorted(named.split(', ')) == [f'{tmp_path}/c/run.log', f'{tmp_path}/d/run.log']
    assert '] start (1/4) ' in out and f'failed {tmp_path}/c (' in out


def test_run_deferred_forwards_a_sigterm_and_stops_after_the_runs_saved(tmp_path, capsys):
    import argparse
    import signal
    import threading
    code = ("import signal, sys, time; "
            "signal.signal(signal.SIGTERM, lambda *a: (print('saved'), sys.exit(143))); "
            "print('up', flush=True); time.sleep(60)")
    jobs = [_job(tmp_path, n, code) for n in 'abc']
    args = argparse.Namespace(workers=2, dry_run=False, collect_only=False)
    _runs.start_deferring(args)
    for cmd, done in jobs:
        _runs.ensure_run(cmd, done, args)

    def term():
        for _ in range(100):                        # both runs up (their handlers installed)
            if all(os.path.exists(tmp_path / n / 'run.log') and 'up' in
                   (tmp_path / n / 'run.log').read_text() for n in 'ab'):
                break
            threading.Event().wait(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=term, daemon=True).start()
    with pytest.raises(SystemExit) as e:
        _runs.run_deferred(args, poll_s=0.1)
    assert e.value.code == 143
    assert (tmp_path / 'a' / 'run.log').read_text() == 'up\nsaved\n'
    assert (tmp_path / 'b' / 'run.log').read_text() == 'up\nsaved\n'
    assert not os.path.exists(tmp_path / 'c')                  # not started after the SIGTERM
    assert signal.getsignal(signal.SIGTERM) is not None
    assert capsys.readouterr().out.count('interrupted (exit 143)') == 2


def test_next_item_table_with_workers_runs_the_missing_runs_first_then_collects(tmp_path, capsys,
                                                                                 monkeypatch):
    work, data = _next_item_runs(tmp_path)
    started = []

    class FakeRun:
        def __init__(self, cmd, stdout=None, stderr=None, cwd=None, env=None):
            wd = _runs.workdir_of(cmd)
            started.append((wd, env['XLA_FLAGS']))
            self.returncode = 3 if '/Yelp/' in wd else 0
            if not self.returncode:
                _write(os.path.join(wd, 'metrics', 'test.json'),
                       {'sampled': {'hr@10': 0.4, 'ndcg@10': 0.2}, 'full': {'hr@10': 0.05, 'ndcg@10': 0.02}})

        def poll(self):
            return self.returncode

    monkeypatch.setattr(_runs.subprocess, 'Popen', FakeRun)
    out = tmp_path / 'res'
    argv = ['--data-root', data, '--work-root', work, '--datasets', 'LastFM,Yelp', '--models', 'sasrec',
            '--seeds', '0,2', '--out-dir', str(out), '--workers', '2']
    assert next_item_table.main(argv) == 1
    assert [w for w, _ in started] == [f'{work}/sasrec/LastFM/seed2', f'{work}/sasrec/Yelp/seed0',
                                       f'{work}/sasrec/Yelp/seed2']
    assert all('intra_op_parallelism_threads=1' in f for _, f in started)
    printed = capsys.readouterr().out
    assert printed.splitlines()[-1] == (
        f'2 run(s) failed, their cells are left out: {work}/sasrec/Yelp/seed0/run.log, '
        f'{work}/sasrec/Yelp/seed2/run.log')
    md = (out / 'next_item.md').read_text()
    assert '| sasrec | LastFM | 2 | 0.4500 ± 0.0707 (0.96x) | 0.4706 |' in md
    assert '--workers' not in md                                   # no figure depends on it


def _next_item_runs(tmp_path):
    work, data = tmp_path / 'work', tmp_path / 'data'
    for d in ('LastFM', 'Yelp'):
        os.makedirs(data / d)
    vals = {('sasrec', 'LastFM', 0): (0.5, 0.3, 0.06, 0.03), ('sasrec', 'LastFM', 1): (0.45, 0.28, 0.07, 0.035),
            ('poprec', 'Yelp', 0): (0.36, 0.2, 0.01, 0.005),
            ('gru4rec-softmax', 'LastFM', 2): (0.3, 0.15, 0.04, 0.02)}
    for (m, d, s), (h, n, hf, nf) in vals.items():
        _write(str(work / m / d / f'seed{s}' / 'metrics' / 'test.json'),
               {'sampled': {'hr@10': h, 'ndcg@10': n}, 'full': {'hr@10': hf, 'ndcg@10': nf}})
    os.makedirs(work / 'caser' / 'LastFM' / 'seed0' / 'metrics')           # unfinished
    return str(work), str(data)


def test_next_item_table_output_is_what_it_was_before_the_shared_helpers(tmp_path, capsys):
    """The expected texts were made by next_item_table.py before it used experiments/_runs.py (plus
    the closing link to next_item_notes.md and the ledger's name, added since)."""
    work, data = _next_item_runs(tmp_path)
    out = tmp_path / 'res'
    argv = ['--data-root', data, '--work-root', work, '--collect-only', '--datasets', 'LastFM,Yelp',
            '--models', 'poprec,sasrec,gru4rec:softmax,caser', '--out-dir', str(out)]
    assert next_item_table.main(argv) == 0
    assert (out / 'next_item.md').read_text() == NEXT_ITEM_MD.replace('ARGS', shlex.join(argv))
    with open(out / 'next_item.csv', newline='') as f:
        raw = f.read()
    assert '\r\n' in raw                                        # csv's own line ends, as before
    lines = raw.replace(work, '{W}').replace(data, '{D}').splitlines()
    assert lines[0] == ('model,dataset,scene,seeds,hr10_mean,hr10_std,ndcg10_mean,ndcg10_std,'
                        'published_hr10,published_ndcg10,command')
    assert len(lines) == 17
    assert lines[5] == ('sasrec,LastFM,sampled,2,0.475,0.03535533905932737,0.29000000000000004,'
                        '0.014142135623730923,0.4706,0.2755,python main.py --config=experiments/configs/'
                        'sasrec.py --workdir={W}/sasrec/LastFM/seed0 --config.data_dir={D}/LastFM --config.seed=0')
    assert lines[1] == ('poprec,LastFM,sampled,0,,,,,0.3037,0.1687,python main.py --config=experiments/'
                        'configs/poprec.py --workdir={W}/poprec/LastFM/seed0 --config.data_dir={D}/LastFM '
                        '--config.seed=0')
    capsys.readouterr()
    assert next_item_table.main(['--data-root', '/nonexistent', '--work-root', work, '--dry-run',
                                 '--datasets', 'LastFM,Yelp', '--models', 'poprec,sasrec', '--steps', '300',
                                 '--set', 'sasrec:dropout=0.2', '--set', 'sasrec@LastFM:x=1',
                                 '--set', '*:eval_every=100', '--out-dir', str(tmp_path / 'res2')]) == 0
    got = [re.sub(r'^\[\d\d:\d\d:\d\d\] ', '', l) for l in _lines(capsys)]
    assert got[0] == (f'python main.py --config=experiments/configs/poprec.py --workdir={work}/poprec/LastFM/'
                      'seed0 --config.data_dir=/nonexistent/LastFM --config.seed=0 --config.eval_every=100')
    assert got[5] == (f'python main.py --config=experiments/configs/sasrec.py --workdir={work}/sasrec/LastFM/'
                      'seed2 --config.data_dir=/nonexistent/LastFM --config.seed=2 --config.train_steps=300 '
                      '--config.eval_every=100 --config.dropout=0.2 --config.x=1')
    assert len(got) == 9            # 2 models x 2 datasets x 3 seeds, less the 3 finished runs
    assert not os.path.exists(tmp_path / 'res2')


def test_next_item_ledger_keeps_results_whose_run_folders_are_gone(tmp_path, capsys, monkeypatch):
    """The ledger takes every finished run; with the run folders deleted the same table comes back
    from it; a ledger row made by another command is not used (its run is listed as missing, and a
    dry run would run it); rows outside the selection are kept; a malformed ledger is one line."""
    import shutil
    work, data = _next_item_runs(tmp_path)
    out = tmp_path / 'res'
    monkeypatch.setattr(sys, 'argv', ['next_item_table', 'ARGS'])
    base = ['--data-root', data, '--work-root', work, '--collect-only', '--datasets', 'LastFM,Yelp',
            '--out-dir', str(out)]
    assert next_item_table.main(base + ['--models', 'poprec,sasrec,gru4rec:softmax,caser']) == 0
    first_md, first_csv = (out / 'next_item.md').read_text(), (out / 'next_item.csv').read_text()
    with open(out / 'next_item_runs.csv', newline='') as f:
        ledger = list(csv.DictReader(f))
    assert [(r['model'], r['dataset'], r['seed']) for r in ledger] == [
        ('gru4rec:softmax', 'LastFM', '2'), ('poprec', 'Yelp', '0'), ('sasrec', 'LastFM', '0'),
        ('sasrec', 'LastFM', '1')]
    assert [float(ledger[3][k]) for k in ('hr10_sampled', 'ndcg10_sampled', 'hr10_full', 'ndcg10_full')] == [
        0.45, 0.28, 0.07, 0.035]
    assert ledger[3]['command'].endswith('--config.seed=1')

    shutil.rmtree(work)                                     # the machine is gone, the ledger is not
    os.makedirs(work)
    assert next_item_table.main(base + ['--models', 'poprec,sasrec,gru4rec:softmax,caser']) == 0
    assert (out / 'next_item.md').read_text() == first_md
    assert (out / 'next_item.csv').read_text() == first_csv

    capsys.readouterr()                                     # other overrides: sasrec's rows are not used
    assert next_item_table.main(base + ['--models', 'sasrec', '--set', 'sasrec:train_steps=7',
                                        '--replace']) == 0
    said = _lines(capsys)
    assert sum('was made by another command' in l for l in said) == 2
    assert 'sasrec x LastFM' in (out / 'next_item.md').read_text().split('Not run yet')[1]
    with open(out / 'next_item_runs.csv', newline='') as f:
        assert len(list(csv.DictReader(f))) == 4            # nothing dropped, nothing replaced
    same = next_item_table.config_part     # the same overrides said another way, elsewhere: the same run
    assert same('python main.py --config=c.py --workdir=a --config.data_dir=/d/X --config.seed=0 '
                '--config.train_steps=2 --config.train_steps=7') == same(
                "python main.py --config=c.py --workdir=b --config.data_dir=/e/X --config.train_steps='7' "
                '--config.seed=0')
    assert same('python main.py --config=c.py --config.seed=0') != same('python main.py --config=c.py:v '
                                                                        '--config.seed=0')

    with open(out / 'next_item_runs.csv', 'a') as f:
        f.write('sasrec,LastFM,x,0.1,0.1,0.1,0.1,2026-01-01,python main.py\n')
    with pytest.raises(SystemExit, match=r'next_item_runs.csv: line 6: not a ledger row'):
        next_item_table.main(base + ['--models', 'sasrec', '--replace'])


def test_a_finished_folder_of_another_config_is_not_taken_as_the_commands_result(tmp_path, capsys):
    """A run folder finished under other overrides (the driver run again with another --set) is
    said in one line and left out with --collect-only, not shown under the new command; the same
    values said another way (7 / 7.0 / '7', True / true) agree, and a key the folder lacks (a
    field added later) cannot tell."""
    wd = tmp_path / 'run'
    _write(str(wd / 'config.json'), {'train_steps': 7, 'pack_sequences': True, 'model': 'sasrec',
                                     'model_kwargs': {'dropout_rate': 0.2},
                                     'decode': {'strategy': 'topk'}})
    _write(str(wd / 'metrics' / 'test.json'), {'sampled': {'hr@10': 0.5}})
    same = ['python', 'main.py', '--config=c.py', f'--workdir={wd}', '--config.data_dir=/x',
            '--config.train_steps=7.0', '--config.pack_sequences=true',
            '--config.model_kwargs.dropout_rate=0.2', '--config.decode.strategy=topk',
            '--config.early_stop_patience=4']
    assert _runs.config_mismatch(str(wd), same) is None
    assert _runs.config_mismatch(str(wd), same[:5] + ['--config.train_steps=3'] + same[5:]) is None
    assert _runs.config_mismatch(str(wd), same + ['--config.pack_sequences']) is None   # absl's True
    assert _runs.read_result(str(wd), cmd=same) == {'sampled': {'hr@10': 0.5}}
    for flag, why in [('--config.train_steps=10000', 'train_steps: 7 in the folder, 10000'),
                      ('--config.model_kwargs.dropout_rate=0.5', 'dropout_rate: 0.2 in the folder'),
                      ('--config.decode.strategy=beam', "decode.strategy: 'topk' in the folder")]:
        assert why in _runs.config_mismatch(str(wd), same + [flag])
    capsys.readouterr()
    assert _runs.read_result(str(wd), cmd=same + ['--config.train_steps=10']) is None
    assert _runs.read_result(str(wd), cmd=same + ['--config.train_steps=10']) is None
    said = _lines(capsys)
    assert len(said) == 1 and 'finished under another config (train_steps: 7' in said[0]
    # the driver: sasrec x LastFM seed 0 finished with train_steps 2000; asked 10000, it is left out
    work, data = _next_item_runs(tmp_path)
    _write(os.path.join(work, 'sasrec', 'LastFM', 'seed0', 'config.json'), {'train_steps': 2000})
    out = tmp_path / 'res'
    base = ['--data-root', data, '--work-root', work, '--collect-only', '--datasets', 'LastFM',
            '--models', 'sasrec', '--seeds', '0,1', '--out-dir', str(out)]
    assert next_item_table.main(base + ['--set', 'sasrec:train_steps=2000']) == 0
    assert '| sasrec | LastFM | 2 |' in (out / 'next_item.md').read_text()
    capsys.readouterr()
    assert next_item_table.main(base + ['--set', 'sasrec:train_steps=10000', '--replace']) == 0
    assert any('seed0: finished under another config (train_steps: 2000' in l for l in _lines(capsys))
    assert '| sasrec | LastFM | 1 |' in (out / 'next_item.md').read_text()


# ------------------------------------------------------------------------------ table3

def test_table3_paper_figures_match_the_papers_text():
    seeds = glob.glob(os.path.join(ROOT, '..', 'shared', 'seeds', '000_*'))
    if not seeds:
        pytest.skip('the AOS4Rec paper (../shared/seeds/000_*) is not beside the project')
    with open(seeds[0]) as f:
        text = f.read()
    order = ['PopRec', 'BPR', 'GRU4Rec+', 'SASRec', 'GCSAN', 'Caser', 'BERT4Rec', 'IRGAN', 'RecGAN',
             'AOS4Rec-R', 'AOS4Rec-T']
    found = {}
    for m in re.finditer(r'^(Prec|NDCG|BLEU)@(6|10) ((?:\d\.\d+ ?){11})$', text, flags=re.M):
        ds = 'YOOCHOOSE' if m.group(2) == '6' else 'MovieLens'
        found[ds, m.group(1)] = [float(x) for x in m.group(3).split()]
    assert len(found) == 6
    for ds in ('YOOCHOOSE', 'MovieLens'):
        for i, metric in enumerate(('Prec', 'NDCG', 'BLEU')):
            assert [table3.PAPER[ds][name][i] for name in order] == found[ds, metric]
    assert [r.paper for r in table3.ROWS.values() if r.paper] == order


def test_table3_dry_run_prints_exactly_the_missing_commands(tmp_path, capsys):
    work, data = str(tmp_path / 'w'), str(tmp_path / 'd')
    _write(f'{work}/sasrec/yoochoose-100k/seed1/metrics/test.json', _metrics(6, (0.5, 0.5, 0.1)))
    assert table3.main(['--data-root', data, '--work-root', work, '--dry-run', '--rows', 'poprec,sasrec,aos4rec_r',
                        '--datasets', 'yoochoose-100k', '--seeds', '0,1', '--steps', '300',
                        '--out-dir', str(tmp_path / 'res'),
                        '--set', 'aos4rec_r:aos4rec.gan_steps=5', '--set', '*:log_every=7']) == 0

    def cmd(row, cfg, seed, rest):
        return (f'python main.py --config=experiments/configs/{cfg} --workdir={work}/{row}/yoochoose-100k/'
                f'seed{seed} --config.data_dir={data}/yoochoose-100k --config.seed={seed}{rest}')
    aos = (' --config.model=gru --config.train_steps=300 --config.eval_every=100 --config.checkpoint_every=500'
           ' --config.aos4rec.critic_pretrain_steps=200 --config.aos4rec.gan_steps=5 --config.log_every=7')
    assert _lines(capsys) == [
        cmd('poprec', 'poprec.py', 0, ' --config.log_every=7'),
        cmd('sasrec', 'sasrec.py:paper', 0, ' --config.train_steps=300 --config.eval_every=200 '
                                           '--config.checkpoint_every=1000 --config.log_every=7'),
        cmd('aos4rec_r', 'aos4rec.py:both', 0, aos),
        cmd('poprec', 'poprec.py', 1, ' --config.log_every=7'),     # sasrec seed 1 is finished
        cmd('aos4rec_r', 'aos4rec.py:both', 1, aos),
    ]
    assert not os.path.exists(os.path.join(work, 'commands.log'))
    # bad input is one usage error
    with pytest.raises(SystemExit):
        table3.main(['--data-root', data, '--work-root', work, '--dry-run', '--rows', 'nope'])
    with pytest.raises(SystemExit):
        table3.main(['--data-root', data, '--work-root', work, '--rows', 'poprec'])   # no data folder


@pytest.fixture
def table3_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(table3.ROWS, 'fakegan', table3.Row(None, 'no_such_config_for_this_test', 'paper'))
    work = tmp_path / 'w'
    yc = 'yoochoose-100k'
    for seed, (p, n, b, pf) in enumerate([(0.50, 0.30, 0.01, 0.1), (0.52, 0.30, 0.02, 0.2),
                                           (0.54, 0.30, 0.03, 0.3)]):
        _write(str(work / 'sasrec' / yc / f'seed{seed}' / 'metrics' / 'test.json'),
               _metrics(6, (p, n, b), (pf, 0.05, 0.005)))
    for seed, p in enumerate([0.4, 0.6]):
        _write(str(work / 'aos4rec_t' / yc / f'seed{seed}' / 'metrics' / 'test.json'),
               _metrics(6, (p, 0.25, 0.1), strategy='beam'))
    _write(str(work / 'poprec' / yc / 'seed0' / 'metrics' / 'test.json'), _metrics(6, (0.1, 0.1, 0.001)))
    _write(str(work / 'caser' / yc / 'seed0' / 'config.json'), {})              # unfinished: no test.json
    os.makedirs(work / 'caser' / yc / 'seed0' / 'metrics')
    return str(work)


def test_table3_collect_only_cells_paper_ratio_not_run_and_rank_order(table3_runs, tmp_path, capsys):
    out = tmp_path / 'out'
    argv = ['--data-root', str(tmp_path / 'nodata'), '--work-root', table3_runs, '--collect-only',
            '--rows', 'poprec,sasrec,caser,aos4rec_t,gpt,fakegan', '--datasets', 'yoochoose-100k',
            '--out-dir', str(out)]
    assert table3.main(argv) == 0
    err = capsys.readouterr().err
    assert 'fakegan: not available (experiments/configs/no_such_config_for_this_test.py does not exist yet)' in err
    md = (out / 'table3.md').read_text()
    assert not glob.glob(str(out / '*.tmp'))
    rows = {l.split(' | ')[0]: l for l in md.splitlines() if l.startswith('| ')}
    # sampled scene (the first table): cells by hand, the paper's figure, our mean / the paper's
    assert ('| SASRec | sasrec.py:paper | 3 | topk | 0.5200 ± 0.0200 (0.98x) | 0.531 | '
            '0.3000 ± 0.0000 (0.55x) | 0.546 | 0.0200 ± 0.0100 (0.32x) | 0.063 |') in md
    assert ('| AOS4Rec-T | aos4rec.py:both | 2 | beam 5 | 0.5000 ± 0.1414 (0.91x) | 0.552 | '
            '0.2500 ± 0.0000 (0.45x) | 0.56 | 0.1000 ± 0.0000 (0.74x) | 0.135 |') in md
    assert ('| PopRec | poprec.py | 1 | topk | 0.1000 (0.92x) | 0.109 | 0.1000 (0.79x) | 0.126 | '
            '0.0010 (0.50x) | 0.002 |') in md
    # full scene: no paper figure, no ratio
    assert ('| SASRec | sasrec.py:paper | 3 | topk | 0.2000 ± 0.1000 | - | 0.0500 ± 0.0000 | - | '
            '0.0050 ± 0.0000 | - |') in md
    assert '## yoochoose-100k, 1000 sampled candidates' in md and '## yoochoose-100k, all items' in md
    assert '| Caser' not in md and '| gpt' not in md and 'fakegan |' not in md
    assert ('Not run yet (no finished run in the work root): caser x yoochoose-100k, gpt x yoochoose-100k.'
            in md)
    assert 'Fewer seeds than asked: poprec x yoochoose-100k (1/3 seeds), aos4rec_t x yoochoose-100k (2/3 seeds).' in md
    assert 'Not available: fakegan (experiments/configs/no_such_config_for_this_test.py does not exist yet).' in md
    # the rank-order section: paper AOS4Rec-T > SASRec > PopRec; ours SASRec > AOS4Rec-T > PopRec on
    # Prec and NDCG (ranks 3 2 1 vs 2 3 1: rho = 1 - 6 * 2 / (3 * 8) = 0.5), the same order on BLEU
    assert ('- yoochoose-100k, NDCG@K: 3 rows, rho = 0.50, 1 of 3 pairs inverted: AOS4Rec-T > SASRec.'
            in md)
    assert '  paper: AOS4Rec-T > SASRec > PopRec; ours: SASRec > AOS4Rec-T > PopRec.' in md
    assert '- yoochoose-100k, Prec@K: 3 rows, rho = 0.50, 1 of 3 pairs inverted: AOS4Rec-T > SASRec.' in md
    assert '- yoochoose-100k, BLEU@K: 3 rows, rho = 1.00, 0 of 3 pairs inverted.' in md
    assert md.startswith('# AOS4Rec Table 3 rebuilt') and 'Made by `python -m experiments.table3 --data-root' in md
    assert len(rows) > 0
    with open(out / 'table3.csv', newline='') as f:
        recs = list(csv.DictReader(f))
    by = {(r['row'], r['scene']): r for r in recs}
    assert len(recs) == 12
    s = by['sasrec', 'sampled']
    assert (s['status'], s['seeds'], s['seeds_done'], s['k'], s['paper_name']) == ('done', '3', '0 1 2', '6', 'SASRec')
    assert float(s['prec_mean']) == pytest.approx(0.52) and float(s['prec_std']) == pytest.approx(0.02)
    assert float(s['paper_ndcg']) == 0.546 and float(s['ndcg_ratio']) == pytest.approx(0.3 / 0.546, abs=1e-4)
    assert s['command'] == (f'python main.py --config=experiments/configs/sasrec.py:paper --workdir={table3_runs}/'
                            f'sasrec/yoochoose-100k/seed0 --config.data_dir={tmp_path}/nodata/yoochoose-100k '
                            '--config.seed=0 --config.train_steps=2000 --config.eval_every=200 '
                            '--config.checkpoint_every=1000')
    assert by['caser', 'sampled']['status'] == 'not run' and by['caser', 'sampled']['prec_mean'] == ''
    assert by['fakegan', 'full']['status'] == 'not available' and by['fakegan', 'full']['command'] == ''
    assert by['aos4rec_t', 'full']['paper_prec'] == ''
    # idempotent: the same runs give the same files
    before = (out / 'table3.md').read_text(), (out / 'table3.csv').read_text()
    assert table3.main(argv) == 0
    assert ((out / 'table3.md').read_text(), (out / 'table3.csv').read_text()) == before


def test_table3_results_survive_lost_run_folders(table3_runs, tmp_path, capsys):
    """Table 3 keeps a ledger (table3_runs.csv) like the next-item table: with the run folders
    gone (a new machine) the same table comes back from it; a ledger row made by other overrides
    is not used; a row of the table in --out-dir with more seeds than a collection finds (runs
    that predate the ledger) is kept as it was, said, and listed, unless --replace."""
    import shutil
    out = tmp_path / 'out'
    argv = ['--data-root', str(tmp_path / 'nodata'), '--work-root', table3_runs, '--collect-only',
            '--rows', 'poprec,sasrec,caser,aos4rec_t', '--datasets', 'yoochoose-100k', '--out-dir', str(out)]
    assert table3.main(argv) == 0
    first = (out / 'table3.md').read_text(), (out / 'table3.csv').read_text()
    with open(out / 'table3_runs.csv', newline='') as f:
        ledger = list(csv.DictReader(f))
    assert [(r['row'], r['seed']) for r in ledger] == [
        ('aos4rec_t', '0'), ('aos4rec_t', '1'), ('poprec', '0'), ('sasrec', '0'), ('sasrec', '1'), ('sasrec', '2')]
    r = ledger[4]
    assert [float(r[f]) for f in table3.LEDGER_FIGURES] == [0.52, 0.30, 0.02, 0.2, 0.05, 0.005]
    assert (r['k'], r['decoding'], ledger[0]['decoding']) == ('6', 'topk', 'beam 5')
    assert r['command'].endswith('--config.seed=1 --config.train_steps=2000 --config.eval_every=200 '
                                 '--config.checkpoint_every=1000')

    shutil.rmtree(table3_runs)                              # the machine is gone, the ledger is not
    assert table3.main(argv) == 0
    assert ((out / 'table3.md').read_text(), (out / 'table3.csv').read_text()) == first

    capsys.readouterr()            # other overrides: SASRec's ledger rows are not used, its 3 seeds kept
    assert table3.main(argv + ['--set', 'sasrec:train_steps=7']) == 0
    said = _lines(capsys)
    assert sum('was made by another command' in l for l in said) == 3
    assert any(l.startswith('table3: kept sasrec x yoochoose-100k from ') and 'seeds 0 1 2 there, none found now'
               in l for l in said)
    md = (out / 'table3.md').read_text()
    assert ('| SASRec | sasrec.py:paper | 3 | topk | 0.5200 ± 0.0200 (0.98x) | 0.531 | '
            '0.3000 ± 0.0000 (0.55x) | 0.546 | 0.0200 ± 0.0100 (0.32x) | 0.063 |') in md
    assert 'Kept from the table this one replaced' in md and 'predate the ledger' in md
    assert first[1].splitlines()[3:5] == (out / 'table3.csv').read_text().splitlines()[3:5]   # sasrec's rows
    with open(out / 'table3_runs.csv', newline='') as f:
        assert len(list(csv.DictReader(f))) == 6            # nothing dropped, nothing replaced

    assert table3.main(argv + ['--set', 'sasrec:train_steps=7', '--replace']) == 0
    with open(out / 'table3.csv', newline='') as f:
        by = {(x['row'], x['scene']): x for x in csv.DictReader(f)}
    assert (by['sasrec', 'sampled']['status'], by['sasrec', 'sampled']['seeds']) == ('not run', '0')
    assert 'Kept from' not in (out / 'table3.md').read_text()

    with open(out / 'table3_runs.csv', 'a') as f:
        f.write('sasrec,yoochoose-100k,1,x,0,0,0,0,0,6,topk,2026-01-01,python main.py\n')
    with pytest.raises(SystemExit, match=r'table3_runs.csv: line 8: not a ledger row'):
        table3.main(argv)


# ------------------------------------------------------------------------------ strategies_table

def test_strategies_dry_run_and_collect(tmp_path, capsys):
    work, data = str(tmp_path / 'w'), str(tmp_path / 'd')
    run = f'{work}/gpt/ml-1m-paper/seed0'
    assert strategies_table.main(['--data-root', data, '--work-root', work, '--dry-run',
                                  '--strategies', 'topk,beam5,ra_t0.3', '--set', 'model_kwargs.dropout_rate=0.2']) == 0
    assert _lines(capsys) == [
        f'python main.py --config=experiments/configs/gpt.py --workdir={run} --config.data_dir={data}/ml-1m-paper '
        '--config.seed=0 --config.train_steps=5000 --config.eval_every=500 --config.checkpoint_every=500 '
        '--config.model_kwargs.dropout_rate=0.2',
        f'python -m aos4rec_jax.evaluate --workdir={run} --tag=topk --strategy=topk --splits=test --seed=0',
        f'python -m aos4rec_jax.evaluate --workdir={run} --tag=beam5 --strategy=beam --beam=5 --splits=test --seed=0',
        f'python -m aos4rec_jax.evaluate --workdir={run} --tag=ra_t0.3 --strategy=multi_ra --temperature=0.3 '
        '--num-sequences=20 --splits=test --seed=0',
    ]
    for seed, nd in ((0, 0.2), (1, 0.4)):
        d = f'{work}/gpt/ml-1m-paper/seed{seed}/metrics'
        _write(f'{d}/test.json', _metrics(10, (0.1, 0.1, 0.01)))
        _write(f'{d}/test_topk.json', _metrics(10, (0.1, nd, 0.01), (0.05, nd / 2, 0.005)))
    _write(f'{work}/gpt/ml-1m-paper/seed0/metrics/test_beam5.json', _metrics(10, (0.3, 0.3, 0.03), strategy='beam'))
    # seed 2: an evaluation file but no finished training run: not collected
    _write(f'{work}/gpt/ml-1m-paper/seed2/metrics/test_topk.json', _metrics(10, (0.9, 0.9, 0.9)))
    assert strategies_table.main(['--data-root', data, '--work-root', work, '--dry-run', '--seeds', '0',
                                  '--strategies', 'topk,beam5,ra_t0.3']) == 0
    assert _lines(capsys) == [f'python -m aos4rec_jax.evaluate --workdir={run} --tag=ra_t0.3 --strategy=multi_ra '
                              '--temperature=0.3 --num-sequences=20 --splits=test --seed=0']
    out = tmp_path / 'out'
    assert strategies_table.main(['--data-root', data, '--work-root', work, '--collect-only', '--seeds', '0,1,2',
                                  '--strategies', 'topk,beam5,ra_t0.3', '--out-dir', str(out)]) == 0
    md = (out / 'strategies.md').read_text()
    assert ('| top-K of the next-item scores | 2 | 0.1000 ± 0.0000 | 0.3000 ± 0.1414 | 0.0100 ± 0.0000 | '
            '0.5000 ± 0.0000 | 0.2500 ± 0.0000 | not reported |') in md
    assert '| beam search, 5 beams | 1 | 0.3000 | 0.3000 | 0.0300 | 0.5000 | 0.2500 | not reported |' in md
    assert '| top-K of the next-item scores | 2 | 0.0500 ± 0.0000 | 0.1500 ± 0.0707 |' in md     # all items
    assert 'Not run yet (no metrics/test_TAG.json in the work root): ra_t0.3.' in md
    assert 'reports no figure' in md and 'K = 10' in md
    with open(out / 'strategies.csv', newline='') as f:
        recs = {(r['strategy'], r['scene']): r for r in csv.DictReader(f)}
    assert recs['topk', 'sampled']['seeds_done'] == '0 1'
    assert recs['beam5', 'sampled']['command'] == (f'python -m aos4rec_jax.evaluate --workdir={run} --tag=beam5 '
                                                   '--strategy=beam --beam=5 --splits=test --seed=0')


# ------------------------------------------------------------------------------ oracle_nll_table

def test_oracle_nll_dry_run_and_collect(tmp_path, capsys):
    work = str(tmp_path / 'w')
    assert oracle_nll_table.main(['--work-root', work, '--dry-run', '--seeds', '0', '--rows', 'mle,seqgan,ssrgan',
                                  '--steps', '10,2,3', '--set', 'max_eval_users=50']) == 0
    base = f'--config.seed=0 --config.synthetic.cache_dir={work}/data'
    ev = 'python -m aos4rec_jax.evaluate --workdir={} --tag=sample --strategy=sample --temperature=1.0 --splits=test --seed=0'
    assert _lines(capsys) == [
        f'python main.py --config=experiments/configs/aos4rec.py:quick,base --workdir={work}/seed0/base {base} '
        '--config.train_steps=10 --config.max_eval_users=50',
        ev.format(f'{work}/seed0/base'),
        # both adversarial rows start from the mle run's kept generator (no second MLE run)
        f'python main.py --config=experiments/configs/seqgan.py:quick --workdir={work}/seed0/seqgan {base} '
        f'--config.train_steps=0 --config.seqgan.init_from={work}/seed0/base --config.seqgan.d_pretrain_steps=2 '
        '--config.seqgan.gan_steps=3 --config.max_eval_users=50',
        ev.format(f'{work}/seed0/seqgan'),
        f'python main.py --config=experiments/configs/aos4rec.py:quick,adver --workdir={work}/seed0/adver {base} '
        f'--config.train_steps=0 --config.aos4rec.init_from={work}/seed0/base --config.aos4rec.critic_pretrain_steps=2 '
        '--config.aos4rec.gan_steps=3 --config.max_eval_users=50',
        ev.format(f'{work}/seed0/adver'),
    ]
    nll = lambda full: {'full': full, 'sampled': full + 1, 'target': 39.46}
    for seed, (beam, samp, sg) in enumerate([(40.0, 70.0, 68.0), (42.0, 72.0, 68.0)]):
        d = f'{work}/seed{seed}'
        _write(f'{d}/base/metrics/test.json', _metrics(10, (0.1, 0.1, 0.01), strategy='beam', nll=nll(beam)))
        _write(f'{d}/base/metrics/test_sample.json', _metrics(10, (0.1, 0.1, 0.01), nll=nll(samp)))
        _write(f'{d}/seqgan/metrics/test.json', _metrics(10, (0.1, 0.1, 0.01), strategy='beam', nll=nll(beam)))
        _write(f'{d}/seqgan/metrics/test_sample.json', _metrics(10, (0.1, 0.1, 0.01), nll=nll(sg)))
        _write(f'{d}/adver/metrics/test.json', _metrics(10, (0.1, 0.1, 0.01), strategy='beam', nll=nll(beam)))
    _write(f'{work}/seed0/adver/metrics/test_sample.json', _metrics(10, (0.1, 0.1, 0.01), nll=nll(69.0)))
    out = tmp_path / 'out'
    assert oracle_nll_table.main(['--work-root', work, '--collect-only', '--seeds', '0,1', '--out-dir', str(out)]) == 0
    md = (out / 'oracle_nll.md').read_text()
    assert ('| MLE (seq2seq Transformer) | 2 | 71.00 ± 1.41 | 7.100 ± 0.141 | 1.0 | 41.00 ± 1.41 | 9.038 | 1.0 |'
            in md)
    assert ('| SeqGAN (REINFORCE, CNN discriminator) | 2 | 68.00 ± 0.00 | 6.800 ± 0.000 | 0.9577 | 41.00 ± 1.41 | '
            '8.736 | 0.9666 |') in md
    # ssrgan: seed 1 has no sampling evaluation yet: its sampling cell is seed 0's
    assert '| SSRGAN (AOS4Rec adversarial, from MLE) | 1 | 69.00 | 6.900 | 0.9718 | 41.00 ± 1.41 | - | - |' in md
    assert 'NLL_oracle of the true test continuations: 39.46 per list.' in md
    assert 'Not run yet' not in md and "SeqGAN's oracle is not ours" in md
    with open(out / 'oracle_nll.csv', newline='') as f:
        recs = {r['row']: r for r in csv.DictReader(f)}
    assert recs['seqgan']['command'].startswith('python main.py --config=experiments/configs/seqgan.py:quick '
                                                f'--workdir={work}/seed0/seqgan')
    assert f'--config.train_steps=0 --config.seqgan.init_from={work}/seed0/base' in recs['seqgan']['command']
    assert float(recs['mle']['sample_full_std']) == pytest.approx(2 ** 0.5)
    # a row with no finished run is listed; seqgan or ssrgan without mle is refused (they start from it)
    assert oracle_nll_table.main(['--work-root', str(tmp_path / 'empty'), '--collect-only', '--rows', 'mle',
                                  '--out-dir', str(out), '--replace']) == 0
    assert 'Not run yet (no finished run with its sampling evaluation in the work root): mle.' in \
        (out / 'oracle_nll.md').read_text()
    for rows in ('ssrgan', 'seqgan', 'seqgan,ssrgan'):
        with pytest.raises(SystemExit):
            oracle_nll_table.main(['--work-root', work, '--dry-run', '--rows', rows])


# ------------------------------------------------------------------------------ one real run

@pytest.mark.slow
def test_table3_really_runs_poprec_and_then_skips_it(tmp_path, capsys):
    """table3.py -> main.py on a tiny synthetic prepared folder: PopRec (no training steps; 15 s
    on the 2-core CPU shared with other jobs, 33 s at load 13: marked slow)."""
    from aos4rec_jax import datasets
    from experiments.configs import base
    c = base.tiny(base.get_config())
    datasets.make_synthetic(c.synthetic, str(tmp_path / 'data' / 'tiny'), log=lambda m: None)
    work, out = tmp_path / 'w', tmp_path / 'out'
    argv = ['--data-root', str(tmp_path / 'data'), '--work-root', str(work), '--rows', 'poprec',
            '--datasets', 'tiny', '--seeds', '0', '--out-dir', str(out)]
    assert table3.main(argv) == 0
    printed = capsys.readouterr().out
    assert 'python main.py --config=experiments/configs/poprec.py' in printed and 'failed' not in printed
    assert (work / 'poprec' / 'tiny' / 'seed0' / 'metrics' / 'test.json').exists()
    log = (work / 'commands.log').read_text().splitlines()
    assert ' start python main.py --config=experiments/configs/poprec.py' in log[0] and ' exit 0 ' in log[1]
    md = (out / 'table3.md').read_text()
    assert '| PopRec | poprec.py | 1 | top-k scores |' in md
    # the same command again runs nothing and writes the same table
    assert table3.main(argv) == 0
    assert 'main.py' not in capsys.readouterr().out
    assert len((work / 'commands.log').read_text().splitlines()) == 2 and (out / 'table3.md').read_text() == md


@pytest.mark.slow
def test_table3_with_two_workers_runs_both_seeds_at_once(tmp_path, capsys):
    """--workers 2 through main.py: PopRec's two seeds start before either ends, each in its own
    folder; the table has both and its Made-by line no --workers."""
    from aos4rec_jax import datasets
    from experiments.configs import base
    c = base.tiny(base.get_config())
    datasets.make_synthetic(c.synthetic, str(tmp_path / 'data' / 'tiny'), log=lambda m: None)
    work, out = tmp_path / 'w', tmp_path / 'out'
    argv = ['--data-root', str(tmp_path / 'data'), '--work-root', str(work), '--rows', 'poprec',
            '--datasets', 'tiny', '--seeds', '0,1', '--out-dir', str(out), '--workers', '2']
    assert table3.main(argv) == 0
    printed = capsys.readouterr().out
    assert '] start (1/2) python main.py' in printed and '] start (2/2) python main.py' in printed
    assert printed.index('start (2/2)') < printed.index(' done ')        # both started first
    for s in (0, 1):
        assert (work / 'poprec' / 'tiny' / f'seed{s}' / 'metrics' / 'test.json').exists()
    md = (out / 'table3.md').read_text()
    assert '| PopRec | poprec.py | 2 | top-k scores |' in md and '--workers' not in md


def test_memorization_reports_each_part_and_refuses_a_run_without_a_generator(tmp_path, capsys):
    """experiments/memorization.py on a tiny Transformer run with critic_holdout 0.2: the
    seq2seq users' windows, the held-out users' windows and the validation users, each with the
    judge's AUC in [0, 1] and positive NLLs; the JSON file equals what it printed. A folder that is
    not a run is one line and exit 2."""
    from aos4rec_jax import trainer
    from experiments import memorization
    from experiments.configs import aos4rec as aos_cfg
    c = aos_cfg.get_config('tiny,base')
    c.train_steps, c.eval_every, c.checkpoint_every = 10, 10, 10
    c.aos4rec.critic_holdout = 0.2
    c.aos4rec.critic_eval_users = 16
    run = tmp_path / 'run'
    trainer.train_and_evaluate(c, str(run))
    capsys.readouterr()
    out = tmp_path / 'memo.json'
    assert memorization.main(['--workdir', str(run), '--batches', '1', '--out', str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text()) and printed['critic_holdout'] == 0.2
    assert printed['valid_users'] == 16
    for part in ('seq2seq', 'critic', 'valid'):
        r = printed[part]
        assert 0.0 <= r['auc_nll'] <= 1.0 and r['nll_real'] > 0 and r['nll_fake'] > 0, part
        assert 0.0 <= r['same_position'] <= 1.0 and 0.0 <= r['overlap'] <= 1.0
    assert memorization.main(['--workdir', str(tmp_path / 'nothing')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('memorization: error:')


def test_a_narrower_selection_does_not_replace_a_fuller_table_unasked(tmp_path, capsys):
    """A driver asked for a subset (one row, one seed) would write a table of that subset over the
    full one in --out-dir: it is refused before any run, with one line naming the file and what
    would be lost; the full selection, a folder of its own or --replace write it."""
    out = tmp_path / 'results'
    out.mkdir()
    old = ('row,dataset,scene,seeds\n'
           'poprec,yoochoose-100k,sampled,3\npoprec,yoochoose-100k,full,3\n'
           'bpr,yoochoose-100k,sampled,3\nbpr,yoochoose-100k,full,3\n'
           'caser,yoochoose-100k,sampled,0\n')
    (out / 'table3.csv').write_text(old)
    base = ['--data-root', str(tmp_path / 'data'), '--work-root', str(tmp_path / 'runs'),
            '--datasets', 'yoochoose-100k', '--collect-only', '--out-dir', str(out)]
    for narrower, lost in ((['--rows', 'poprec', '--seeds', '0,1,2'], 'bpr/yoochoose-100k/sampled (3 seeds)'),
                           (['--rows', 'poprec,bpr', '--seeds', '0'], 'poprec/yoochoose-100k/sampled (3 seeds)')):
        with pytest.raises(SystemExit) as e:
            table3.main(base + narrower)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert f': error: {out / "table3.csv"} holds results this command would drop' in err
        assert lost in err and '--replace' in err and 'caser' not in err
        assert (out / 'table3.csv').read_text() == old
    assert table3.main(base + ['--rows', 'poprec,bpr,caser', '--seeds', '0,1,2']) == 0   # covers it
    assert table3.main(base + ['--rows', 'poprec', '--seeds', '0', '--out-dir', str(tmp_path / 'other')]) == 0
    assert table3.main(base + ['--rows', 'poprec', '--seeds', '0', '--replace']) == 0
    with open(out / 'table3.csv') as f:
        assert {r['row'] for r in csv.DictReader(f)} == {'poprec'}
    # the other drivers share the check: next_item's keys are (model, short dataset name, scene)
    (out / 'next_item.csv').write_text('model,dataset,scene,seeds\nbpr,LastFM,sampled,3\n')
    (tmp_path / 'LastFM').mkdir()
    with pytest.raises(SystemExit):
        next_item_table.main(['--data-root', str(tmp_path), '--work-root', str(tmp_path / 'runs'),
                              '--models', 'poprec', '--datasets', 'LastFM', '--collect-only',
                              '--out-dir', str(out)])
    assert 'bpr/LastFM/sampled (3 seeds)' in capsys.readouterr().err
