"""data_prep's flags that change the reported protocol: --ban-history / --no-ban-history,
--max-len and --delimiter (issue 17: untested until now). Each is checked in the written folder
(protocol.json, the sequences) and, for banning, in what evaluation reads back."""
import json

import pyarrow.parquet as pq

from aos4rec_jax import data as data_lib
from tests.test_data_prep import TINY, TINY_ARGS, TINY_SEQS, run_cli


def write_csv(path, sep=','):
    path.write_text(f'user{sep}item{sep}time\n' + ''.join(f'{u}{sep}{i}{sep}{t}\n' for u, i, t in TINY))
    return path


def prep(tmp_path, capsys, name, extra, sep=','):
    src = write_csv(tmp_path / f'{name}.csv', sep)
    rc, _, err = run_cli(['--format', 'csv', '--input', src, '--output', tmp_path / name, '--quiet']
                         + TINY_ARGS + extra, capsys)
    assert rc == 0, err
    return tmp_path / name


def protocol(folder):
    return json.loads((folder / 'protocol.json').read_text())


def sequences(folder):
    return pq.read_table(folder / 'sequences.parquet').column('items').to_pylist()


def test_ban_history_flags_override_the_profile(tmp_path, capsys):
    """--ban-history on the csv profile (which allows history) and --no-ban-history on the
    movielens profile (which bans it) are written to protocol.json and read back by the
    evaluation (DataInfo.ban_history decides whether history items are banned)."""
    plain = prep(tmp_path, capsys, 'plain', [])
    banned = prep(tmp_path, capsys, 'banned', ['--ban-history'])
    ml = prep(tmp_path, capsys, 'ml', ['--profile', 'movielens', '--min-len', '3'])
    ml_off = prep(tmp_path, capsys, 'ml_off', ['--profile', 'movielens', '--min-len', '3',
                                                '--no-ban-history'])
    got = {f.name: (protocol(f)['ban_history'], data_lib.Dataset.load(str(f)).info.ban_history)
           for f in (plain, banned, ml, ml_off)}
    assert got == {'plain': (False, False), 'banned': (True, True), 'ml': (True, True),
                   'ml_off': (False, False)}
    assert sequences(banned) == sequences(plain) == TINY_SEQS   # the data itself is the same


def test_max_len_drops_longer_users(tmp_path, capsys):
    """--max-len N keeps users with at most N interactions (after the k-core) and drops the
    others whole (docs/data_prep.md, step 3): user 10 has 4, users 2 and 9 have 3."""
    out = prep(tmp_path, capsys, 'cut', ['--max-len', '3'])
    assert protocol(out)['max_len'] == 3
    assert sequences(out) == TINY_SEQS[:2]
    raw_users = pq.read_table(out / 'sequences.parquet').column('raw_user').to_pylist()
    assert raw_users == ['2', '9']
    assert json.loads((out / 'stats.json').read_text())['users'] == 2
    out = prep(tmp_path, capsys, 'none', ['--max-len', 'none'])
    assert protocol(out)['max_len'] is None and sequences(out) == TINY_SEQS


def test_tab_delimiter(tmp_path, capsys):
    """--delimiter tab and --delimiter '\\t' read a tab-separated file exactly as the comma one."""
    comma = prep(tmp_path, capsys, 'comma', [])
    for name, flag in (('tab', 'tab'), ('esc', '\\t')):
        out = prep(tmp_path, capsys, name, ['--delimiter', flag], sep='\t')
        assert sequences(out) == sequences(comma) == TINY_SEQS
        for f in ('item_map.parquet', 'splits.parquet', 'candidates_test.parquet'):
            assert pq.read_table(out / f).equals(pq.read_table(comma / f)), f
    # and without the flag the tab file is one column: refused with the file named, exit 2
    src = write_csv(tmp_path / 'tabbed.csv', '\t')
    rc, _, err = run_cli(['--format', 'csv', '--input', src, '--output', tmp_path / 'x', '--quiet']
                         + TINY_ARGS, capsys)
    assert rc == 2 and 'tabbed.csv' in err and not (tmp_path / 'x').exists()
