"""data_prep on hand-made tiny inputs: every format, remapping, splits, candidates, API, folder.

Bad inputs are in test_data_prep_errors.py, the real datasets in test_data_prep_real.py.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import data_prep
from data_prep import (PreparedData, Settings, build_dataset, load_dataset, settings_for,
                       write_dataset)
from data_prep.cli import main as cli_main


def run_cli(args, capsys):
    """Run ``python -m data_prep`` in-process -> (exit code, stdout, stderr)."""
    try:
        rc = cli_main([str(a) for a in args])
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


# The logical tiny log used in every format: (user, item, time) in file order.
# Ties: user 10 has (300, t2) before (100, t2); user 2 has (300, t5) before (400, t5).
TINY = [(10, 100, 3), (10, 200, 1), (10, 300, 2), (10, 100, 2),
        (2, 300, 5), (2, 400, 5), (2, 500, 4),
        (9, 100, 7), (9, 500, 6), (9, 600, 8)]
# Users in numeric order 2 < 9 < 10 (as strings "10" < "2" < "9").
# Sequences: 2: 500 300 400 | 9: 500 100 600 | 10: 200 300 100 100
# Items by first appearance: 500->1 300->2 400->3 100->4 600->5 200->6.
TINY_RAW_USERS = ["2", "9", "10"]
TINY_ITEM_RAW = ["", "500", "300", "400", "100", "600", "200"]
TINY_SEQS = [[1, 2, 3], [1, 4, 5], [6, 2, 4, 4]]
TINY_NEVER = [{4, 5, 6}, {2, 3, 6}, {1, 3, 5}]
TINY_TARGETS_VALID = [[2], [4], [4]]
TINY_TARGETS_TEST = [[3], [5], [4]]
TINY_ARGS = ["--k-core", "1", "--min-len", "3", "--num-candidates", "4", "--target-len", "1"]


def _write(path: Path, text: str, gz: bool = False, crlf: bool = False) -> Path:
    data = text.replace("\n", "\r\n") if crlf else text
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data.encode())
    else:
        path.write_bytes(data.encode())
    return path


def tiny_text(fmt: str) -> str:
    if fmt == "movielens":
        return "".join(f"{u}::{i}::4::{1000 + t}\n" for u, i, t in TINY)
    if fmt == "ml100k":
        return "".join(f"{u}\t{i}\t4\t{1000 + t}\n" for u, i, t in TINY)
    if fmt == "movielens-csv":
        return "userId,movieId,rating,timestamp\n" + "".join(
            f"{u},{i},3.5,{1000 + t}\n" for u, i, t in TINY)
    if fmt == "yoochoose":  # raw clicks: ISO times with ms and 'Z', Category a string or a number
        cats = ["0", "S", "2053", "0", "S", "0", "1", "0", "S", "0"]
        return "".join(f"{u},2014-04-07T10:51:0{t}.277Z,{i},{c}\n"
                       for (u, i, t), c in zip(TINY, cats))
    if fmt == "session-tsv":
        return "SessionId\tItemId\tTime\n" + "".join(
            f"{u}\t{i}\t{1396437466.94 + t}\n" for u, i, t in TINY)
    if fmt == "csv":
        return "ts;iid;uid;extra\n" + "".join(
            f"2020-01-0{t} 12:00:00;{i};{u};x\n" for u, i, t in TINY)
    raise ValueError(fmt)


def check_tiny(out: Path, num_candidates: int = 4):
    p = load_dataset(out)
    assert p.raw_users.tolist() == TINY_RAW_USERS
    assert p.item_raw.tolist() == TINY_ITEM_RAW
    assert [p.sequence(u).tolist() for u in range(3)] == TINY_SEQS
    assert p.n_train.tolist() == [1, 1, 2]
    assert p.n_valid.tolist() == [1, 1, 1]
    assert p.n_test.tolist() == [1, 1, 1]
    for u in range(3):
        for cands, tgt in ((p.cand_valid[u], TINY_TARGETS_VALID[u]),
                           (p.cand_test[u], TINY_TARGETS_TEST[u])):
            assert cands.shape == (num_candidates,)
            # the target plus all 3 never-seen items; with 4 candidates nothing is left to chance
            assert set(cands.tolist()) - {0} == set(tgt) | TINY_NEVER[u]
    st = p.stats
    assert (st["users"], st["items"], st["interactions"]) == (3, 6, 10)
    assert (st["min_len"], st["max_len"], st["avg_len"]) == (3, 4, pytest.approx(10 / 3))
    assert (st["train_items"], st["valid_items"], st["test_items"]) == (4, 3, 3)
    return p


FORMAT_FILES = [("movielens", "ratings.dat", False, False),
                ("movielens", "ratings.dat.gz", True, False),
                ("ml100k", "u.data", False, False),
                ("movielens-csv", "ratings.csv", False, True),       # CRLF like the real files
                ("movielens-csv", "ratings.csv.gz", True, True),
                ("yoochoose", "yoochoose-clicks.dat", False, False),
                ("yoochoose", "yoochoose-clicks.dat.gz", True, False),
                ("session-tsv", "sessions.txt", False, False),
                ("csv", "log.csv", False, False)]


@pytest.mark.parametrize("fmt,name,gz,crlf", FORMAT_FILES)
def test_tiny_every_format(tmp_path, capsys, fmt, name, gz, crlf):
    src = _write(tmp_path / name, tiny_text(fmt), gz=gz, crlf=crlf)
    extra = (["--user-col", "uid", "--item-col", "iid", "--time-col", "ts", "--delimiter", ";"]
             if fmt == "csv" else [])
    out = tmp_path / "out"
    rc, stdout, err = run_cli(["--format", fmt, "--input", src, "--output", out, *TINY_ARGS,
                               *extra], capsys)
    assert rc == 0, err
    assert "# User" in stdout and "# Item" in stdout and "Avg." in stdout
    assert "3.33" in stdout.splitlines()[-1]
    assert "[data_prep" in err  # progress with timings on stderr
    check_tiny(out)
    proto = json.loads((out / "protocol.json").read_text())
    assert proto["format"] == fmt and proto["inputs"] == [str(src.resolve())]
    assert proto["num_items"] == 6 and proto["num_users"] == 3
    assert sorted(os.listdir(tmp_path)) == sorted([name, "out"])  # no temporary folder left


def test_folder_layout_and_schemas(tmp_path, capsys):
    src = _write(tmp_path / "r.dat", tiny_text("movielens"))
    out = tmp_path / "ds"
    assert run_cli(["--format", "movielens", "--input", src, "--output", out, *TINY_ARGS],
                   capsys)[0] == 0
    assert sorted(os.listdir(out)) == sorted(
        ["sequences.parquet", "splits.parquet", "candidates_valid.parquet",
         "candidates_test.parquet", "item_map.parquet", "protocol.json", "stats.json"])
    seq = pq.read_table(out / "sequences.parquet")
    assert seq.schema.field("user").type == pa.int32()
    assert seq.schema.field("raw_user").type == pa.string()
    assert seq.schema.field("items").type == pa.list_(pa.int32())
    assert seq.column("user").to_pylist() == [0, 1, 2]
    assert seq.column("raw_user").to_pylist() == TINY_RAW_USERS
    assert seq.column("items").to_pylist() == TINY_SEQS
    spl = pq.read_table(out / "splits.parquet")
    for c in ("user", "n_train", "n_valid", "n_test"):
        assert spl.schema.field(c).type == pa.int32()
    for name in ("candidates_valid", "candidates_test"):
        t = pq.read_table(out / f"{name}.parquet")
        assert t.schema.field("user").type == pa.int32()
        assert t.schema.field("candidates").type == pa.list_(pa.int32())
        assert {len(c) for c in t.column("candidates").to_pylist()} == {4}
    im = pq.read_table(out / "item_map.parquet")
    assert im.schema.field("item").type == pa.int32()
    assert im.schema.field("raw_item").type == pa.string()
    assert im.column("item").to_pylist() == [1, 2, 3, 4, 5, 6]
    assert im.column("raw_item").to_pylist() == TINY_ITEM_RAW[1:]
    proto = json.loads((out / "protocol.json").read_text())
    for key in ("profile", "protocol", "k_core", "min_len", "max_len", "cap", "k", "target_len",
                "history_len", "num_candidates", "ban_history", "seed", "num_items", "num_users",
                "format", "inputs"):
        assert key in proto, key
    assert proto["profile"] == "movielens" and proto["protocol"] == "paper"
    assert proto["k_core"] == 1 and proto["min_len"] == 3 and proto["max_len"] is None
    assert proto["cap"] == 80 and proto["ban_history"] is True and proto["num_candidates"] == 4
    stats = json.loads((out / "stats.json").read_text())
    for key in ("users", "items", "interactions", "min_len", "max_len", "avg_len", "train_items",
                "valid_items", "test_items", "raw_users", "raw_items", "raw_interactions",
                "kcore_users", "kcore_items", "kcore_interactions", "users_short_candidates",
                "elapsed_seconds"):
        assert key in stats, key
    assert (stats["raw_users"], stats["raw_items"], stats["raw_interactions"]) == (3, 6, 10)


def test_several_inputs_concatenate_in_order(tmp_path, capsys):
    """Ties across files keep the order of the --input files."""
    lines = tiny_text("session-tsv").splitlines()
    header, rows = lines[0], lines[1:]
    a = _write(tmp_path / "a.txt", "\n".join([header] + rows[:5]) + "\n")  # ... (2, 300, t5)
    b = _write(tmp_path / "b.txt.gz", "\n".join([header] + rows[5:]) + "\n", gz=True)
    out = tmp_path / "ab"
    assert run_cli(["--format", "session-tsv", "--input", a, b, "--output", out, *TINY_ARGS],
                   capsys)[0] == 0
    check_tiny(out)
    assert load_dataset(out).stats["rows_per_file"] == [5, 5]
    # Reversed: (2, 400, t5) now comes first in file order, so 400 precedes 300 for user 2.
    out2 = tmp_path / "ba"
    assert run_cli(["--format", "session-tsv", "--input", b, a, "--output", out2, *TINY_ARGS],
                   capsys)[0] == 0
    p = load_dataset(out2)
    assert p.raw_users.tolist() == TINY_RAW_USERS
    assert [p.item_raw[i] for i in p.sequence(0)] == ["500", "400", "300"]


def test_yoochoose_iso_milliseconds_and_days(tmp_path, capsys):
    text = ("1,2014-04-07T10:51:09.277Z,214536502,0\n"
            "1,2014-04-07T10:51:09.030Z,214536500,0\n"   # 247 ms earlier
            "1,2014-04-06T23:59:59.999Z,214536506,S\n"   # the day before
            "1,2014-04-07T10:51:09.277Z,214577561,0\n")  # tie with the first line
    src = _write(tmp_path / "clicks.dat", text)
    out = tmp_path / "y"
    rc, _, err = run_cli(["--format", "yoochoose", "--input", src, "--output", out, "--k-core", "1",
                          "--min-len", "3", "--num-candidates", "3", "--target-len", "1"], capsys)
    assert rc == 0, err
    p = load_dataset(out)
    assert [p.item_raw[i] for i in p.sequence(0)] == ["214536506", "214536500", "214536502",
                                                      "214577561"]
    assert p.settings.profile == "yoochoose" and p.settings.ban_history is False


def test_generic_csv_string_and_numeric_user_order(tmp_path, capsys):
    rows = [("u10", "b", 1), ("u9", "a", 2), ("u10", "c", 3), ("u9", "b", 4), ("u10", "a", 5),
            ("u9", "c", 6)]
    src = _write(tmp_path / "s.csv",
                 "user,item,time\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    out = tmp_path / "s"
    args = ["--k-core", "1", "--min-len", "3", "--num-candidates", "1", "--target-len", "1"]
    assert run_cli(["--format", "csv", "--input", src, "--output", out, *args], capsys)[0] == 0
    p = load_dataset(out)
    assert p.raw_users.tolist() == ["u10", "u9"]          # strings: "u10" < "u9"
    assert p.item_raw.tolist() == ["", "b", "c", "a"]
    assert p.settings.profile == "default"
    # all-integer string ids are ordered numerically; quoted fields, float times
    src2 = _write(tmp_path / "n.csv", 'time,user,item\n' + "".join(
        f'{t}.5,"{u[1:]}",{i}\n' for u, i, t in rows))
    out2 = tmp_path / "n"
    assert run_cli(["--format", "csv", "--input", src2, "--output", out2, *args], capsys)[0] == 0
    assert load_dataset(out2).raw_users.tolist() == ["9", "10"]


def test_kcore_is_iterative_and_length_filter_runs_once():
    # k = 2: D has one interaction -> dropped; then item r has one -> dropped; C is left with
    # (p, s), length 2, which the length filter (min 3) drops. A single simultaneous pass
    # would have kept C = (p, r, s).
    log = [("A", "p", 1), ("A", "q", 2), ("A", "s", 3), ("B", "p", 1), ("B", "q", 2),
           ("B", "s", 3), ("C", "p", 1), ("C", "r", 2), ("C", "s", 3), ("D", "r", 1)]
    u, i, t = (np.array(c) for c in zip(*log))
    one = dict(num_candidates=1, target_len=1)
    p = build_dataset(u, i, t, settings_for("default", k_core=2, min_len=3, **one))
    assert p.raw_users.tolist() == ["A", "B"]
    assert p.item_raw.tolist() == ["", "p", "q", "s"]
    st = p.stats
    assert (st["kcore_users"], st["kcore_items"], st["kcore_interactions"]) == (3, 3, 8)
    assert st["users"] == 2 and st["length_filtered_users"] == 1
    # The length filter runs once: E (length 2) survives the 2-core and is then dropped, which
    # leaves item r with a single interaction; no second k-core removes it.
    log2 = [("A", "p", 1), ("A", "q", 2), ("A", "r", 3), ("B", "p", 1), ("B", "q", 2),
            ("B", "s", 3), ("C", "p", 1), ("C", "q", 2), ("C", "s", 3), ("E", "r", 1),
            ("E", "s", 2)]
    u, i, t = (np.array(c) for c in zip(*log2))
    p2 = build_dataset(u, i, t, settings_for("default", k_core=2, min_len=3, **one))
    assert p2.raw_users.tolist() == ["A", "B", "C"]
    assert p2.item_raw.tolist() == ["", "p", "q", "r", "s"]
    assert p2.stats["kcore_users"] == 4 and p2.stats["kcore_items"] == 4
    assert int((p2.items_flat == 3).sum()) == 1


def test_max_len_and_split_sizes():
    # lengths 3..30 for users 0..27, plus one of 31 dropped by max_len 30
    users, items, times = [], [], []
    for n in range(3, 32):
        users += [n] * n
        items += list(range(n))
        times += list(range(n))
    s = settings_for("default", k_core=1, min_len=3, max_len=30, cap=4, num_candidates=1,
                     target_len=1)
    p = build_dataset(np.array(users), np.array(items), np.array(times), s)
    lens = np.diff(p.offsets)
    assert lens.tolist() == list(range(3, 31))
    h = [min(-(-n // 5), 4) for n in range(3, 31)]    # ceil(0.2 n) capped at 4
    assert p.n_test.tolist() == h and p.n_valid.tolist() == h
    assert (p.n_train + p.n_valid + p.n_test).tolist() == lens.tolist()
    assert p.stats["max_len"] == 30 and p.stats["length_filtered_users"] == 1
    # exact integer ceil: 35 * 0.2 == 7.000000000000001 in floating point, h must be 7
    assert data_prep.split_sizes(np.array([35]), 80)[2].tolist() == [7]
    assert data_prep.split_sizes(np.array([36, 500]), 80)[2].tolist() == [8, 80]


def test_max_len_flag_over_a_profile_maximum(tmp_path, capsys):
    """--max-len on the CLI against a profile that has a maximum (yoochoose: 200, the profile of
    session-tsv). docs/data_prep.md, step 3: users with min_len <= n <= max_len are kept whole,
    longer ones dropped whole (never cut). `--max-len none` / `inf` lift the maximum: it must not
    read as "no override" and leave the profile's 200 (tests/test_guard_data_prep.py only tries
    'none' on the default profile, whose maximum is already none)."""
    long_items = [str(100 + k % 50) for k in range(201)]      # session 7: 201 clicks, repeats
    rows = ([(7, it, k) for k, it in enumerate(long_items)]
            + [(3, "900", 1), (3, "901", 2), (3, "100", 3), (3, "902", 4)]
            + [(5, "901", 9), (5, "903", 8), (5, "900", 7)])
    src = _write(tmp_path / "s.tsv", "SessionId\tItemId\tTime\n" + "".join(
        f"{u}\t{i}\t{1396437466.5 + t}\n" for u, i, t in rows))
    short = {"3": ["900", "901", "100", "902"], "5": ["900", "903", "901"]}   # by time

    def prep(name, extra):
        out = tmp_path / name
        rc, _, err = run_cli(["--format", "session-tsv", "--input", src, "--output", out,
                              "--quiet", *TINY_ARGS, *extra], capsys)
        assert rc == 0, err
        p = load_dataset(out)
        seqs = {u: [p.item_raw[i] for i in p.sequence(k)] for k, u in enumerate(p.raw_users)}
        return json.loads((out / "protocol.json").read_text())["max_len"], seqs

    for name, extra, want_max, kept in (
            ("profile", [], 200, False), ("200", ["--max-len", "200"], 200, False),
            ("201", ["--max-len", "201"], 201, True),        # n == max_len is kept
            ("none", ["--max-len", "none"], None, True), ("inf", ["--max-len", "inf"], None, True)):
        max_len, seqs = prep(name, extra)
        assert max_len == want_max, name
        assert seqs == ({**short, "7": long_items} if kept else short), name


def _random_log(seed=0, users=40, items=120, lo=12, hi=60):
    rng = np.random.default_rng(seed)
    u, i, t = [], [], []
    for k in range(users):
        n = int(rng.integers(lo, hi))
        u += [1000 + 7 * k] * n
        i += rng.integers(1, items + 1, size=n).tolist()  # repeats allowed (like YOOCHOOSE)
        t += rng.integers(0, 50, size=n).tolist()         # many ties
    return np.array(u), np.array(i), np.array(t)


def _check_candidates(p: PreparedData, expect_short=False):
    C = p.settings.num_candidates
    T = p.settings.target_len
    for u in range(p.num_users):
        seq = set(p.sequence(u).tolist())
        train, valid, test = p.parts(u)
        for cands, part in ((p.cand_valid[u], valid), (p.cand_test[u], test)):
            assert cands.shape == (C,) and cands.dtype == np.int32
            real = cands[cands > 0]
            if not expect_short:
                assert real.shape[0] == C
            assert len(set(real.tolist())) == real.shape[0]          # distinct
            targets = set(part[:min(T, part.shape[0])].tolist())
            assert targets <= set(real.tolist())                      # y* included
            negs = set(real.tolist()) - targets
            assert not (negs & seq)                                   # never-seen only
            assert all(1 <= c <= p.num_items for c in real.tolist())


def test_candidates_properties_and_determinism():
    u, i, t = _random_log()
    s = settings_for("default", k_core=2, min_len=10, num_candidates=50, target_len=3)
    p = build_dataset(u, i, t, s)
    assert p.num_users > 20
    _check_candidates(p)
    assert p.stats["users_short_candidates"] == 0
    p2 = build_dataset(u, i, t, s)
    assert np.array_equal(p.cand_valid, p2.cand_valid) and np.array_equal(p.cand_test, p2.cand_test)
    p3 = build_dataset(u, i, t, s.replace(seed=1))
    assert not np.array_equal(p.cand_valid, p3.cand_valid)
    assert not np.array_equal(p.cand_test, p3.cand_test)
    _check_candidates(p3)
    # same sequences and splits whatever the seed
    assert np.array_equal(p.items_flat, p3.items_flat)
    # the lists are shuffled: the first target is not always at the same position
    pos = [int(np.flatnonzero(p.cand_test[k] == p.parts(k)[2][0])[0]) for k in range(p.num_users)]
    assert len(set(pos)) > 5
    # valid and test lists are drawn independently
    assert not np.array_equal(p.cand_valid, p.cand_test)


def test_candidates_independent_of_other_users():
    """A user's lists depend on its own index, sequence, split and N only, not on others."""
    u, i, t = _random_log(seed=3, users=10, items=40)
    s = settings_for("default", k_core=1, min_len=10, num_candidates=20)
    p = build_dataset(u, i, t, s)
    # Replace the last user's items by a reordering: same item set overall, other sequences equal.
    last = u == u.max()
    t2 = t.copy()
    t2[last] = -t[last]
    q = build_dataset(u, i, t2, s)
    same_prefix = p.offsets[-2]
    assert np.array_equal(p.items_flat[:same_prefix], q.items_flat[:same_prefix])
    assert p.num_items == q.num_items
    assert not np.array_equal(p.sequence(p.num_users - 1), q.sequence(q.num_users - 1))
    assert np.array_equal(p.cand_valid[:-1], q.cand_valid[:-1])
    assert np.array_equal(p.cand_test[:-1], q.cand_test[:-1])


def test_short_candidates_padded_with_zero(tmp_path, capsys):
    src = _write(tmp_path / "r.dat", tiny_text("movielens"))
    out = tmp_path / "short"
    rc, _, err = run_cli(["--format", "movielens", "--input", src, "--output", out, "--k-core", "1",
                          "--min-len", "3", "--num-candidates", "6", "--target-len", "1"], capsys)
    assert rc == 0, err
    p = check_tiny(out, num_candidates=6)
    assert p.stats["users_short_candidates"] == 3
    # 1 target + 3 never-seen items, then two zeros at the end
    assert (p.cand_valid[:, 4:] == 0).all() and (p.cand_valid[:, :4] > 0).all()
    assert (p.cand_test[:, 4:] == 0).all() and (p.cand_test[:, :4] > 0).all()


def test_repeated_targets_counted_once():
    # y* of the test part is (7, 7, 8): the candidate list holds 7 and 8 once each
    u = np.array([1] * 12 + [2] * 5)
    i = np.array([1, 2, 3, 4, 5, 6, 9, 9, 9, 7, 7, 8] + [10, 11, 12, 13, 14])
    t = np.arange(17)
    s = settings_for("default", k_core=1, min_len=3, cap=3, num_candidates=6, target_len=3)
    p = build_dataset(u, i, t, s)
    train, valid, test = p.parts(0)
    assert [p.item_raw[x] for x in test] == ["7", "7", "8"]
    assert [p.item_raw[x] for x in valid] == ["9", "9", "9"]
    _check_candidates(p)
    assert p.stats["users_short_candidates"] == 0


def test_loo_protocol(tmp_path, capsys):
    u, i, t = _random_log(seed=1, users=30, items=400, lo=20, hi=80)
    src = _write(tmp_path / "u.data", "".join(f"{a}\t{b}\t5\t{c}\n" for a, b, c in zip(u, i, t)))
    out = tmp_path / "loo"
    rc, _, err = run_cli(["--format", "ml100k", "--input", src, "--output", out,
                          "--protocol", "loo", "--min-len", "20"], capsys)
    assert rc == 0, err
    p = load_dataset(out)
    s = p.settings
    assert (s.protocol, s.target_len, s.k, s.num_candidates, s.cap) == ("loo", 1, 10, 101, 1)
    assert (p.n_valid == 1).all() and (p.n_test == 1).all()
    assert (p.n_train == np.diff(p.offsets) - 2).all()
    assert p.cand_valid.shape == (p.num_users, 101)
    _check_candidates(p)
    for k in range(p.num_users):
        assert p.parts(k)[2][0] in p.cand_test[k] and p.parts(k)[1][0] in p.cand_valid[k]
    proto = json.loads((out / "protocol.json").read_text())
    assert proto["protocol"] == "loo" and proto["num_candidates"] == 101


def test_settings_profiles_and_overrides():
    m = settings_for("movielens")
    assert (m.k_core, m.min_len, m.max_len, m.cap, m.k, m.target_len, m.history_len,
            m.num_candidates, m.seed, m.ban_history) == (4, 50, None, 80, 10, 10, 50, 1000, 0, True)
    y = settings_for("yoochoose")
    assert (y.k_core, y.min_len, y.max_len, y.cap, y.k, y.target_len, y.history_len,
            y.ban_history) == (4, 12, 200, 6, 6, 6, 20, False)
    d = settings_for("default")
    assert (d.min_len, d.max_len, d.cap, d.k, d.target_len, d.history_len, d.ban_history) == \
        (4, None, 10, 10, 10, 50, False)
    loo = settings_for("yoochoose", "loo")
    assert (loo.cap, loo.target_len, loo.k, loo.num_candidates, loo.min_len) == (1, 1, 10, 101, 12)
    o = settings_for("yoochoose", max_len="none", seed=5, ban_history=True, k=3)
    assert o.max_len is None and o.seed == 5 and o.ban_history and o.k == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.seed = 1  # frozen
    with pytest.raises(data_prep.DataPrepError, match="min_len"):
        settings_for("default", min_len=2)
    with pytest.raises(data_prep.DataPrepError, match="num_candidates"):
        settings_for("default", num_candidates=5)
    with pytest.raises(data_prep.DataPrepError, match="unknown setting"):
        settings_for("default", bogus=1)
    with pytest.raises(data_prep.DataPrepError, match="loo"):
        settings_for("default", "loo", cap=3)


def test_api_write_load_roundtrip_and_overwrite(tmp_path):
    u, i, t = _random_log(seed=2)
    s = settings_for("default", k_core=2, min_len=10, num_candidates=30)
    # string keys and datetime64 times go through the same pipeline
    p = build_dataset(np.array([f"user{x}" for x in u]), np.array([f"it{x}" for x in i]),
                      np.datetime64("2020-01-01") + t.astype("timedelta64[s]"), s,
                      source={"format": "synthetic", "generator": {"vocab": 120}})
    out = write_dataset(p, tmp_path / "ds")
    q = load_dataset(out)
    for f in ("raw_users", "item_raw", "items_flat", "offsets", "n_train", "n_valid", "n_test",
              "cand_valid", "cand_test"):
        assert np.array_equal(getattr(p, f), getattr(q, f)), f
    assert q.settings == s and q.stats == json.loads(json.dumps(p.stats))
    assert q.items_flat.dtype == np.int32 and q.offsets.dtype == np.int64
    assert q.cand_test.dtype == np.int32 and q.n_train.dtype == np.int32
    proto = json.loads((out / "protocol.json").read_text())
    assert proto["format"] == "synthetic" and proto["generator"] == {"vocab": 120}
    with pytest.raises(data_prep.DataPrepError, match="already exists"):
        write_dataset(p, out)
    p2 = build_dataset(u, i, t, s.replace(seed=9))
    write_dataset(p2, out, overwrite=True)
    assert np.array_equal(load_dataset(out).cand_test, p2.cand_test)
    assert sorted(os.listdir(tmp_path)) == ["ds"]  # no temporary or old folder left
    # overwrite never replaces a folder that is not a dataset
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(data_prep.DataPrepError, match="does not look like"):
        write_dataset(p, other, overwrite=True)
    assert (other / "keep.txt").exists()


def test_api_exports():
    for name in ("Settings", "settings_for", "build_dataset", "write_dataset", "load_dataset",
                 "PreparedData", "DataPrepError"):
        assert hasattr(data_prep, name)
    assert Settings is data_prep.Settings
    fields = PreparedData.__dataclass_fields__
    for f in ("raw_users", "item_raw", "items_flat", "offsets", "n_train", "n_valid", "n_test",
              "cand_valid", "cand_test", "settings", "stats"):
        assert f in fields


def test_first_appearance_order_chunked():
    from data_prep.pipeline import _first_appearance_order
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 50, size=1000)
    uniq, first = np.unique(codes, return_index=True)
    expected = uniq[np.argsort(first)]
    for chunk in (1, 3, 64, 5000):
        assert np.array_equal(_first_appearance_order(codes, 50, chunk=chunk), expected)
