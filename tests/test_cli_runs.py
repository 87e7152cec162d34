"""The CLIs that work on a finished run: evaluate (re-decode) and recommend (new histories)."""
import json
import os

import pytest

from aos4rec_jax import evaluate as evaluate_cli
from aos4rec_jax import recommend as recommend_cli
from aos4rec_jax import trainer
from experiments.configs import poprec as poprec_cfg
from experiments.configs import transformer as tf_cfg


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('tiny_tf')
    c = tf_cfg.get_config('tiny')
    c.train_steps = 20
    c.eval_every = 20
    c.checkpoint_every = 20
    trainer.train_and_evaluate(c, str(workdir))
    return workdir


def test_evaluate_writes_tagged_files_and_keeps_the_originals(tiny_run):
    before = (tiny_run / 'metrics' / 'test.json').read_text()
    assert evaluate_cli.main(['--workdir', str(tiny_run), '--tag', 'greedy', '--strategy', 'greedy',
                              '--splits', 'test']) == 0
    m = json.loads((tiny_run / 'metrics' / 'test_greedy.json').read_text())
    assert m['decode']['strategy'] == 'greedy' and m['users'] > 0
    assert (tiny_run / 'predictions' / 'test_greedy.parquet').exists()
    assert (tiny_run / 'metrics' / 'test.json').read_text() == before
    # beam 1 is greedy: the same lists and figures
    assert evaluate_cli.main(['--workdir', str(tiny_run), '--tag', 'beam1', '--strategy', 'beam',
                              '--beam', '1', '--splits', 'test']) == 0
    m1 = json.loads((tiny_run / 'metrics' / 'test_beam1.json').read_text())
    assert m1['sampled'] == m['sampled'] and m1['full'] == m['full']
    assert evaluate_cli.main(['--workdir', str(tiny_run), '--tag', 'bad/tag']) == 2
    assert evaluate_cli.main(['--workdir', str(tiny_run / 'nope'), '--tag', 'x']) == 2


def test_recommend_raw_ids_unknown_items_and_empty_histories(tiny_run, tmp_path, capsys):
    ds_info = json.loads((tiny_run / 'dataset.json').read_text())
    import pyarrow.parquet as pq
    raw = pq.read_table(os.path.join(ds_info['data_dir'], 'item_map.parquet')).column('raw_item').to_pylist()
    inp = tmp_path / 'h.jsonl'
    inp.write_text(json.dumps({'user': 'a', 'history': raw[:5]}) + '\n'
                   + json.dumps({'user': 'b', 'history': [raw[7], 'no-such-item']}) + '\n')
    out = tmp_path / 'recs.jsonl'
    assert recommend_cli.main(['--workdir', str(tiny_run), '--input', str(inp), '--output', str(out),
                               '--k', '5']) == 0
    recs = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r['user'] for r in recs] == ['a', 'b']
    known = set(raw)
    for r in recs:
        assert len(r['items']) == 5 and len(set(r['items'])) == 5 and set(r['items']) <= known
    assert recs[1]['unknown'] == ['no-such-item']
    assert 'unknown item' in capsys.readouterr().err
    # refused: unknown items with --unknown error, an empty history, a malformed line
    assert recommend_cli.main(['--workdir', str(tiny_run), '--input', str(inp), '--output',
                               str(tmp_path / 'x.jsonl'), '--unknown', 'error']) == 2
    assert 'no-such-item' in capsys.readouterr().err
    bad = tmp_path / 'empty.jsonl'
    bad.write_text(json.dumps({'user': 'c', 'history': []}) + '\n')
    assert recommend_cli.main(['--workdir', str(tiny_run), '--input', str(bad), '--output',
                               str(tmp_path / 'y.jsonl')]) == 2
    assert 'empty history' in capsys.readouterr().err
    bad.write_text('{"user": "d", "history": [1, 2]\n')
    assert recommend_cli.main(['--workdir', str(tiny_run), '--input', str(bad), '--output',
                               str(tmp_path / 'z.jsonl')]) == 2
    assert ':1: not valid JSON' in capsys.readouterr().err
    assert not (tmp_path / 'x.jsonl').exists() and not (tmp_path / 'y.jsonl').exists()


def test_recommend_csv_input_orders_by_timestamp(tiny_run, tmp_path):
    ds_info = json.loads((tiny_run / 'dataset.json').read_text())
    import pyarrow.parquet as pq
    raw = pq.read_table(os.path.join(ds_info['data_dir'], 'item_map.parquet')).column('raw_item').to_pylist()
    a = tmp_path / 'h.csv'
    a.write_text('user,item,timestamp\n' + ''.join(f'u,{raw[i]},{10 - i}\n' for i in range(4)))
    b = tmp_path / 'h2.csv'
    b.write_text('user,item\n' + ''.join(f'u,{raw[i]}\n' for i in reversed(range(4))))
    outs = []
    for inp in (a, b):
        out = tmp_path / (inp.stem + '.jsonl')
        assert recommend_cli.main(['--workdir', str(tiny_run), '--input', str(inp), '--output', str(out)]) == 0
        outs.append(json.loads(out.read_text()))
    assert outs[0]['items'] == outs[1]['items']     # the timestamps put the rows in the same order


def test_recommend_poprec(tmp_path):
    c = poprec_cfg.get_config('tiny')
    trainer.train_and_evaluate(c, str(tmp_path / 'pop'))
    ds_info = json.loads((tmp_path / 'pop' / 'dataset.json').read_text())
    import pyarrow.parquet as pq
    raw = pq.read_table(os.path.join(ds_info['data_dir'], 'item_map.parquet')).column('raw_item').to_pylist()
    inp = tmp_path / 'h.jsonl'
    inp.write_text(json.dumps({'user': 'a', 'history': raw[:3]}) + '\n')
    out = tmp_path / 'r.jsonl'
    assert recommend_cli.main(['--workdir', str(tmp_path / 'pop'), '--input', str(inp), '--output', str(out)]) == 0
    assert len(json.loads(out.read_text())['items']) == 10
