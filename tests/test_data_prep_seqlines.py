"""data_prep --format seqlines (one user a line, no times) and --num-negatives (issue 9, part 2).

Hand-made files give exact sequences (a user split over several lines and files, tabs, CRLF,
gzip); bad lines give one message naming file:line; --num-negatives N gives N + 1 candidates
per user under loo; the four S3-Rec files in ../shared/data/amazon-yelp-lastfm give the data
README's counts (section 5) with the next-item recipe of docs/data_prep.md.
"""
from __future__ import annotations

import gzip
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import pytest

import data_prep
from data_prep import DataPrepError, load_dataset, settings_for
from data_prep import readers
from data_prep.cli import main as cli_main

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
S3REC = DATA / "amazon-yelp-lastfm"
# data README section 5: users, items, interactions, min / max / avg length
S3REC_COUNTS = {
    "Sports_and_Outdoors": (35_598, 18_357, 296_337, 5, 296, 8.32),
    "Toys_and_Games": (19_412, 11_924, 167_597, 5, 550, 8.63),
    "Yelp": (30_431, 20_033, 316_354, 5, 350, 10.40),
    "LastFM": (1_090, 3_646, 52_551, 5, 899, 48.21),
}
# the next-item recipe of docs/data_prep.md (S3-Rec's protocol)
S3REC_ARGS = ["--format", "seqlines", "--protocol", "loo", "--num-negatives", "99",
              "--ban-history", "--history-len", "50"]
SMALL = ["--k-core", "1", "--min-len", "3"]


def run_cli(args, capsys):
    """``python -m data_prep`` in-process -> (exit code, stdout, stderr)."""
    try:
        rc = cli_main([str(a) for a in args])
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def _write(path: Path, text: str, gz: bool = False) -> Path:
    data = text.encode()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def _raw_sequences(p) -> dict:
    """{raw user: [raw items in order]} of a PreparedData."""
    return {p.raw_users[u]: [p.item_raw[i] for i in p.sequence(u).tolist()]
            for u in range(p.num_users)}


def _assert_failed(rc, err, tmp_path, inputs, path, line, words=()):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err                      # one line (with --quiet), no traceback
    msg = lines[0]
    assert msg.startswith("data_prep: error: "), msg
    if path is not None:
        assert str(path) in msg, msg
    if line is not None:
        assert f"line {line}:" in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in inputs)  # no output, no tmp
    return msg


# ------------------------------------------------------------------------------------------
# exact sequences

# user 7 is split over lines 1, 4 and 6; tabs, several spaces, trailing blanks, blank lines,
# a CRLF line, repeated items, and users not in id order (the output orders them 3 < 7 < 12).
HAND = ("7 10 11\n"
        "12\t30\t31  32\n"
        "\n"
        "7\t12 \t 10\r\n"
        "3 40 41 40 42   \n"
        "7 13\n"
        "   \n")
HAND_SEQS = {"3": ["40", "41", "40", "42"], "7": ["10", "11", "12", "10", "13"],
             "12": ["30", "31", "32"]}


@pytest.mark.parametrize("gz", [False, True])
def test_hand_made_file_exact_sequences(tmp_path, capsys, gz):
    src = _write(tmp_path / ("seq.txt.gz" if gz else "seq.txt"), HAND, gz)
    out = tmp_path / "out"
    rc, stdout, err = run_cli(["--format", "seqlines", "--input", src, "--output", out,
                               *SMALL, "--num-candidates", "3", "--target-len", "1"], capsys)
    assert rc == 0, err
    assert "5 lines, 12 interactions" in err                    # the progress line
    p = load_dataset(out)
    assert list(p.raw_users) == ["3", "7", "12"]
    assert _raw_sequences(p) == HAND_SEQS
    # items by first appearance over users in id order
    assert list(p.item_raw) == ["", "40", "41", "42", "10", "11", "12", "13", "30", "31", "32"]
    proto = json.loads((out / "protocol.json").read_text())
    assert proto["format"] == "seqlines" and proto["profile"] == "default"
    assert "num_negatives" not in proto                         # paper protocol
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_per_file"] == [12] and stats["raw_interactions"] == 12
    assert stdout.splitlines()[1].split()[:3] == ["out", "3", "10"]   # the Table-1 line


def test_user_continues_across_files(tmp_path, capsys):
    """Time is the running position over all --input files, so a user's items in a second
    file come after those in the first (not interleaved by a per-file position)."""
    a = _write(tmp_path / "a.txt", "1 5 6 7 8 9\n2 5 6\n")
    b = _write(tmp_path / "b.txt.gz", "2 7\n1 1\n2\t8\n", gz=True)
    out = tmp_path / "out"
    rc, _, err = run_cli(["--format", "seqlines", "--input", a, b, "--output", out, "--quiet",
                          *SMALL, "--num-candidates", "2", "--target-len", "1"], capsys)
    assert rc == 0, err
    p = load_dataset(out)
    assert _raw_sequences(p) == {"1": ["5", "6", "7", "8", "9", "1"], "2": ["5", "6", "7", "8"]}
    assert json.loads((out / "stats.json").read_text())["rows_per_file"] == [7, 3]


def test_sasrec_user_item_lines_equal_the_timed_log(tmp_path, capsys):
    """SASRec's own files: one `user item` a line, a user's lines in time order but users
    interleaved. The same interactions as a timed log (ml100k format, file order shuffled)
    give the identical prepared dataset: sequences, ids, splits and candidates."""
    rng = np.random.default_rng(3)
    rows = []
    for k in range(60):
        user = 5 + 3 * k
        n = int(rng.integers(6, 40))
        times = np.sort(rng.choice(10_000, size=n, replace=False))
        rows += [(user, int(rng.integers(1, 300)), int(t)) for t in times]
    by_time = sorted(rows, key=lambda r: r[2])                   # users interleaved
    seq = _write(tmp_path / "sasrec.txt", "".join(f"{u} {i}\n" for u, i, _ in by_time))
    shuffled = [rows[j] for j in rng.permutation(len(rows))]
    timed = _write(tmp_path / "u.data", "".join(f"{u}\t{i}\t5\t{t}\n" for u, i, t in shuffled))
    common = ["--quiet", "--protocol", "loo", "--num-negatives", "20", "--k-core", "2",
              "--min-len", "5", "--profile", "default"]
    rc, _, err = run_cli(["--format", "seqlines", "--input", seq, "--output",
                          tmp_path / "a", *common], capsys)
    assert rc == 0, err
    rc, _, err = run_cli(["--format", "ml100k", "--input", timed, "--output",
                          tmp_path / "b", *common], capsys)
    assert rc == 0, err
    a, b = load_dataset(tmp_path / "a"), load_dataset(tmp_path / "b")
    for name in ("raw_users", "item_raw", "items_flat", "offsets", "n_train", "n_valid",
                 "n_test", "cand_valid", "cand_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.num_users > 40 and a.cand_test.shape[1] == 21


def _reference(text: bytes):
    """Plain Python: (users, items) in file order, one entry per item."""
    users, items = [], []
    for line in text.split(b"\n"):
        toks = [int(t) for t in line.split()]
        users += toks[:1] * (len(toks) - 1)
        items += toks[1:]
    return users, items


def test_reader_matches_plain_python_across_block_boundaries(tmp_path, monkeypatch):
    """The vectorised reader against ``bytes.split``/``int`` on random files, with block sizes
    from 1 byte up (lines and tokens cut across blocks), ids up to the int64 limits."""
    spec = readers.format_spec("seqlines")
    rnd = random.Random(0)
    for trial in range(120):
        lines = []
        for _ in range(rnd.randint(1, 30)):
            toks = [str(rnd.choice([rnd.randint(0, 60), rnd.randint(-10**18, 10**18),
                                    rnd.choice([2**63 - 1, -2**63, 10**18, -(10**18)])]))
                    for _ in range(rnd.randint(2, 10))]
            seps = [rnd.choice([" ", "\t", "   ", " \t "]) for _ in toks]
            lines.append("".join(s + t for s, t in zip(seps, toks))[1:]
                         + rnd.choice(["", " ", "\r", "\t"]))
            if rnd.random() < 0.15:
                lines.append(rnd.choice(["", "  ", "\t", "\r"]))
        text = ("\n".join(lines) + rnd.choice(["", "\n"])).encode()
        path = tmp_path / f"f{trial}.txt"
        path.write_bytes(text)
        monkeypatch.setattr(readers, "_SEQ_BLOCK", rnd.choice([1, 5, 64, 4096]))
        users, items, nlines = readers._read_seqlines(str(path), spec)
        ref_u, ref_i = _reference(text)
        assert users.tolist() == ref_u and items.tolist() == ref_i, trial
        assert nlines == sum(1 for ln in text.split(b"\n") if ln.split())


def test_api_read_interactions_times_are_running_positions(tmp_path):
    a = _write(tmp_path / "a.txt", "5 1 2\n6 3\n")
    b = _write(tmp_path / "b.txt", "5 4\n")
    raw = data_prep.read_interactions("seqlines", [a, b])
    assert raw.users.tolist() == [5, 5, 6, 5] and raw.items.tolist() == [1, 2, 3, 4]
    assert raw.times.tolist() == [0, 1, 2, 3] and raw.times.dtype == np.int64
    assert raw.rows_per_file == [3, 1]
    with pytest.raises(DataPrepError, match="no input files"):
        data_prep.read_interactions("seqlines", [])


# ------------------------------------------------------------------------------------------
# bad input: one line naming file:line, exit 2, no output

BAD = [
    ("seq.txt", "1 2 3\n2\n3 4 5\n", 2, ["user '2' has no items", "user item [item ...]"]),
    ("seq.txt.gz", "1 2 3\n\n\n2 \t \n", 4, ["user '2' has no items"]),
    ("seq.txt", "1 2 3\n2 4 x5 6\n", 2, ["item id 'x5' is not an integer", "'2 4 x5 6'"]),
    ("seq.txt", "1 2 3\nu2 4 5\n", 2, ["user id 'u2' is not an integer"]),
    ("seq.txt", "1 2 3\n2 4 -\n", 2, ["item id '-' is not an integer"]),
    ("seq.txt", "1 2 3\n2 4 1.5\n", 2, ["item id '1.5' is not an integer"]),
    ("seq.txt", "user items\n1 2 3\n", 1, ["user id 'user' is not an integer"]),
    ("seq.txt", "1 2 3\n2 4 99999999999999999999\n", 2, ["out of the 64-bit integer range"]),
    ("seq.txt", "1 2 3\n2 4 9223372036854775808\n", 2, ["out of the 64-bit integer range"]),
    ("seq.txt", "1 2,3\n", 1, ["item id '2,3' is not an integer"]),
    # two problems: the first line in the file wins, whatever its kind
    ("seq.txt", "1 2 3\n4 5\n6\n7 x\n", 3, ["user '6' has no items"]),
    ("seq.txt", "1 2 3\n4 5\n7 x\n6\n", 3, ["item id 'x'"]),
]


@pytest.mark.parametrize("name,content,line,words", BAD)
def test_bad_lines_name_file_and_line(tmp_path, capsys, name, content, line, words):
    src = _write(tmp_path / name, content, gz=name.endswith(".gz"))
    rc, _, err = run_cli(["--format", "seqlines", "--input", src, "--output", tmp_path / "out",
                          "--quiet", *SMALL], capsys)
    _assert_failed(rc, err, tmp_path, [src], src, line, words)


def test_bad_line_deep_in_a_big_file_and_second_file(tmp_path, capsys, monkeypatch):
    """Line numbers stay right across reading blocks and name the file that holds the line."""
    monkeypatch.setattr(readers, "_SEQ_BLOCK", 1000)
    good = "".join(f"{u} {u + 1} {u + 2} {u + 3}\n" for u in range(1, 3001))
    a = _write(tmp_path / "a.txt", good)
    b = _write(tmp_path / "b.txt.gz", good + "\n" * 5 + "9 1\n" + "17\n" + good, gz=True)
    rc, _, err = run_cli(["--format", "seqlines", "--input", a, b, "--output", tmp_path / "o",
                          "--quiet", *SMALL], capsys)
    _assert_failed(rc, err, tmp_path, [a, b], b, 3000 + 5 + 2, ["user '17' has no items"])


@pytest.mark.parametrize("name,content,words", [
    ("empty.txt", b"", ["empty input"]),
    ("blank.txt", b"\n \n\t\r\n", ["empty input"]),
    ("empty.txt.gz", None, ["empty input"]),
    ("fake.txt.gz", b"1 2 3\n", ["not gzip"]),
])
def test_empty_and_not_gzip(tmp_path, capsys, name, content, words):
    src = tmp_path / name
    if content is None:
        _write(src, "", gz=True)
    else:
        src.write_bytes(content)
    rc, _, err = run_cli(["--format", "seqlines", "--input", src, "--output", tmp_path / "out",
                          "--quiet", *SMALL], capsys)
    _assert_failed(rc, err, tmp_path, [src], src, None, words)


def test_truncated_gzip_and_missing_file(tmp_path, capsys):
    whole = gzip.compress(("".join(f"{u} 1 2 3\n" for u in range(20000))).encode())
    src = tmp_path / "cut.txt.gz"
    src.write_bytes(whole[: len(whole) // 2])
    rc, _, err = run_cli(["--format", "seqlines", "--input", src, "--output", tmp_path / "out",
                          "--quiet", *SMALL], capsys)
    _assert_failed(rc, err, tmp_path, [src], src, None, ["cannot read"])
    rc, _, err = run_cli(["--format", "seqlines", "--input", tmp_path / "nope.txt", "--output",
                          tmp_path / "out", "--quiet"], capsys)
    _assert_failed(rc, err, tmp_path, [src], tmp_path / "nope.txt", None, ["no such file"])


def test_csv_flags_refused(tmp_path, capsys):
    src = _write(tmp_path / "seq.txt", "1 2 3\n")
    rc, _, err = run_cli(["--format", "seqlines", "--input", src, "--output", tmp_path / "out",
                          "--quiet", "--delimiter", "tab"], capsys)
    _assert_failed(rc, err, tmp_path, [src], None, None, ["--delimiter", "--format csv"])


# ------------------------------------------------------------------------------------------
# --num-negatives

def _log_for_candidates(tmp_path, users=200, items=400, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    lines = [" ".join(map(str, [u, *rng.integers(1, items + 1, size=int(rng.integers(5, 30)))]))
             for u in range(1, users + 1)]
    return _write(tmp_path / "seq.txt", "\n".join(lines) + "\n")


def test_num_negatives_99_gives_100_candidates(tmp_path, capsys):
    src = _log_for_candidates(tmp_path)
    out = tmp_path / "out"
    rc, _, err = run_cli(["--format", "seqlines", "--input", src, "--output", out, "--quiet",
                          "--protocol", "loo", "--num-negatives", "99"], capsys)
    assert rc == 0, err
    p = load_dataset(out)
    assert p.settings.num_candidates == 100 and p.settings.cap == 1
    assert p.cand_valid.shape == p.cand_test.shape == (p.num_users, 100)
    assert p.num_users == 200
    positions = []
    for u in range(p.num_users):
        seq = set(p.sequence(u).tolist())
        _train, valid, test = p.parts(u)
        for cands, target in ((p.cand_valid[u], int(valid[0])), (p.cand_test[u], int(test[0]))):
            c = cands.tolist()
            assert len(set(c)) == 100 and 0 not in c                  # distinct, no padding
            assert target in c                                        # the target is one
            assert not (set(c) - {target}) & seq                      # negatives never seen
            assert all(1 <= x <= p.num_items for x in c)
            positions.append(c.index(target))
    # make_candidates shuffles the target in: its slot is spread over the list, not fixed
    assert len(set(positions)) > 50 and 0.3 < np.mean(positions) / 99 < 0.7
    proto = json.loads((out / "protocol.json").read_text())
    assert proto["num_candidates"] == 100 and proto["num_negatives"] == 99
    # fixed per user: the same seed gives the same lists
    rc, _, err = run_cli(["--format", "seqlines", "--input", src, "--output", tmp_path / "again",
                          "--quiet", "--protocol", "loo", "--num-negatives", "99"], capsys)
    assert rc == 0, err
    np.testing.assert_array_equal(load_dataset(tmp_path / "again").cand_test, p.cand_test)


def test_num_negatives_defaults_and_agreement(tmp_path, capsys):
    src = _log_for_candidates(tmp_path, users=20)
    for name, extra, want in (("default", [], 101),
                              ("agree", ["--num-negatives", "99", "--num-candidates", "100"], 100),
                              ("cands", ["--num-candidates", "51"], 51),
                              ("one", ["--num-negatives", "1"], 2)):
        rc, _, err = run_cli(["--format", "seqlines", "--input", src, "--output",
                              tmp_path / name, "--quiet", "--protocol", "loo", *SMALL, *extra],
                             capsys)
        assert rc == 0, (name, err)
        proto = json.loads((tmp_path / name / "protocol.json").read_text())
        assert (proto["num_candidates"], proto["num_negatives"]) == (want, want - 1), name


@pytest.mark.parametrize("extra,words", [
    (["--num-negatives", "99"], ["--num-negatives only applies to --protocol loo",
                                 "--num-candidates"]),
    (["--protocol", "paper", "--num-negatives", "99"], ["--protocol loo"]),
    (["--protocol", "loo", "--num-negatives", "99", "--num-candidates", "101"],
     ["--num-candidates 101 and --num-negatives 99 disagree", "(100)"]),
    (["--protocol", "loo", "--num-negatives", "0"], ["--num-negatives must be >= 1"]),
    (["--protocol", "loo", "--num-negatives", "-3"], ["--num-negatives must be >= 1"]),
])
def test_num_negatives_refused(tmp_path, capsys, extra, words):
    src = _write(tmp_path / "seq.txt", "1 2 3 4 5\n")
    rc, _, err = run_cli(["--format", "seqlines", "--input", src, "--output", tmp_path / "out",
                          "--quiet", *extra], capsys)
    _assert_failed(rc, err, tmp_path, [src], None, None, words)


def test_num_negatives_api():
    assert settings_for("default", "loo").num_candidates == 101
    assert settings_for("default", "loo", num_negatives=99).num_candidates == 100
    assert settings_for("movielens", "loo", num_negatives=100,
                        num_candidates=101).num_candidates == 101
    with pytest.raises(DataPrepError, match="only applies to protocol loo"):
        settings_for("default", "paper", num_negatives=99)
    with pytest.raises(DataPrepError, match="disagree"):
        settings_for("default", "loo", num_negatives=99, num_candidates=101)
    with pytest.raises(DataPrepError, match="num_negatives must be an integer"):
        settings_for("default", "loo", num_negatives=9.5)


# ------------------------------------------------------------------------------------------
# the four S3-Rec files (data README section 5)

needs_s3rec = pytest.mark.skipif(
    not all((S3REC / f"{n}.txt.gz").exists() for n in S3REC_COUNTS),
    reason=f"the S3-Rec files (Sports_and_Outdoors, Toys_and_Games, Yelp, LastFM .txt.gz) are "
           f"not under {S3REC} (the shared data folder beside the repository)")


@needs_s3rec
@pytest.mark.parametrize("name", list(S3REC_COUNTS))
def test_s3rec_files_give_the_readme_counts(tmp_path, capsys, name):
    src = S3REC / f"{name}.txt.gz"
    out = tmp_path / name
    t0 = time.perf_counter()
    rc, stdout, err = run_cli(["--input", src, "--output", out, "--quiet", *S3REC_ARGS], capsys)
    seconds = time.perf_counter() - t0
    assert rc == 0, err
    users, items, inter, lo, hi, avg = S3REC_COUNTS[name]
    st = json.loads((out / "stats.json").read_text())
    assert (st["users"], st["items"], st["interactions"]) == (users, items, inter)
    assert (st["min_len"], st["max_len"], round(st["avg_len"], 2)) == (lo, hi, avg)
    # already 5-core: the default profile's 4-core and min length 4 remove nothing
    assert (st["raw_users"], st["raw_items"], st["raw_interactions"]) == (users, items, inter)
    assert (st["kcore_users"], st["kcore_items"], st["kcore_interactions"]) == (users, items,
                                                                                inter)
    assert st["kcore_rounds"] == 1 and st["length_filtered_users"] == 0
    assert st["users_short_candidates"] == 0
    assert (st["train_items"], st["valid_items"], st["test_items"]) == (inter - 2 * users,
                                                                        users, users)
    proto = json.loads((out / "protocol.json").read_text())
    assert (proto["protocol"], proto["k_core"], proto["min_len"], proto["cap"],
            proto["target_len"], proto["history_len"], proto["num_candidates"],
            proto["num_negatives"], proto["ban_history"]) == \
        ("loo", 4, 4, 1, 1, 50, 100, 99, True)
    assert f"{users:,}" in stdout
    # the sequences are the file's lines; the items keep the file's ids (1..N by first
    # appearance there too), so results can be compared item by item with S3-Rec's
    p = load_dataset(out)
    with gzip.open(src, "rt") as f:
        lines = [ln.split() for ln in f]
    assert list(p.raw_users) == [ln[0] for ln in lines]
    assert list(p.item_raw[1:]) == [str(i) for i in range(1, items + 1)]
    flat = [int(i) for ln in lines for i in ln[1:]]
    np.testing.assert_array_equal(p.items_flat, np.asarray(flat, dtype=np.int32))
    assert p.cand_test.shape == (users, 100)
    for u in range(0, users, max(1, users // 300)):           # a sample of users
        seq = set(p.sequence(u).tolist())
        for cands, target in ((p.cand_valid[u], p.sequence(u)[-2]),
                              (p.cand_test[u], p.sequence(u)[-1])):
            c = set(cands.tolist())
            assert len(c) == 100 and target in c and not (c - {int(target)}) & seq
    assert seconds < 60, f"{name} took {seconds:.1f} s"


ML1M = DATA / "ml-1m-subset" / "ratings.dat.gz"


@pytest.mark.skipif(not ML1M.exists(), reason=f"{ML1M} not found (the shared data folder beside "
                                              f"the repository)")
def test_sasrec_ml1m_recipe_stats(tmp_path, capsys):
    """Recipe (b) of docs/data_prep.md: SASRec's ml-1m protocol on the ML-1M subset; the
    figures printed in the doc."""
    out = tmp_path / "ml-1m-sasrec"
    rc, _, err = run_cli(["--format", "movielens", "--input", ML1M, "--output", out, "--quiet",
                          "--protocol", "loo", "--num-negatives", "100", "--k-core", "5",
                          "--min-len", "5", "--history-len", "200", "--ban-history"], capsys)
    assert rc == 0, err
    st = json.loads((out / "stats.json").read_text())
    assert (st["raw_users"], st["raw_items"], st["raw_interactions"]) == (2_999, 3_615, 487_650)
    assert (st["users"], st["items"], st["interactions"]) == (2_999, 3_266, 486_907)
    assert (st["kcore_users"], st["kcore_items"], st["kcore_interactions"],
            st["kcore_rounds"]) == (2_999, 3_266, 486_907, 2)
    assert (st["min_len"], st["max_len"], round(st["avg_len"], 2)) == (17, 1_841, 162.36)
    assert (st["train_items"], st["valid_items"], st["test_items"]) == (480_909, 2_999, 2_999)
    proto = json.loads((out / "protocol.json").read_text())
    assert (proto["num_candidates"], proto["num_negatives"], proto["history_len"],
            proto["ban_history"], proto["k_core"], proto["min_len"]) == (101, 100, 200, True, 5, 5)
    p = load_dataset(out)
    assert p.cand_test.shape == (2_999, 101) and st["users_short_candidates"] == 0
