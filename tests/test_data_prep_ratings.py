"""data_prep keeps the rating of each interaction when the input has one (the MovieLens formats):
it follows the sort, the k-core, the length filter and the remap with its item, travels in the
optional `ratings` column of sequences.parquet, and a folder without that column (every folder
prepared before, and the formats without ratings) loads exactly as before (ratings None)."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import data_prep
from data_prep import build_dataset, load_dataset, settings_for, write_dataset
from tests.test_data_prep import run_cli

# (user, item, rating, time) in file order. Ties: user 2 has (300, t5) before (400, t5); user 10
# has (300, t2), (100, t2), (777, t2) in that order. Item 777 has one interaction: the 2-core
# removes it from the middle of user 10's sequence. User 5 keeps its 2 interactions through the
# 2-core (each of its items has >= 2) and is then dropped by the length filter (min 3).
LOG = [(10, 100, 1.0, 3), (10, 200, 2.0, 1), (10, 300, 3.0, 2), (10, 100, 4.0, 2),
       (10, 777, 5.0, 2),
       (2, 300, 5.0, 5), (2, 400, 1.0, 5), (2, 500, 2.0, 4), (2, 200, 4.0, 6),
       (9, 100, 3.0, 7), (9, 500, 4.0, 6), (9, 400, 5.0, 8),
       (5, 100, 2.0, 1), (5, 300, 1.0, 2)]
ARGS = ["--k-core", "2", "--min-len", "3", "--num-candidates", "3", "--target-len", "1"]
# By hand. Users in numeric order 2, 9, 10 (5 is filtered out).
#   2: 500 (t4, 2) 300 (t5, 5) 400 (t5, 1) 200 (t6, 4)
#   9: 500 (t6, 4) 100 (t7, 3) 400 (t8, 5)
#  10: 200 (t1, 2) 300 (t2, 3) 100 (t2, 4) [777 (t2, 5) k-core] 100 (t3, 1)
# Items by first appearance: 500 -> 1, 300 -> 2, 400 -> 3, 200 -> 4, 100 -> 5.
USERS = ["2", "9", "10"]
SEQS = [[1, 2, 3, 4], [1, 5, 3], [4, 2, 5, 5]]
RATINGS = [[2.0, 5.0, 1.0, 4.0], [4.0, 3.0, 5.0], [2.0, 3.0, 4.0, 1.0]]


def _arrays(log=LOG):
    u, i, r, t = (np.array(c) for c in zip(*log))
    return u, i, r, t


def _settings():
    return settings_for("movielens", k_core=2, min_len=3, num_candidates=3, target_len=1)


def _check(p):
    assert p.raw_users.tolist() == USERS
    assert [p.sequence(u).tolist() for u in range(3)] == SEQS
    assert p.ratings is not None and p.ratings.dtype == np.float32
    assert p.ratings.shape == p.items_flat.shape
    got = [p.ratings[p.offsets[u]:p.offsets[u + 1]].tolist() for u in range(3)]
    assert got == RATINGS


def test_ratings_follow_their_items_through_sort_kcore_and_length_filter():
    u, i, r, t = _arrays()
    p = build_dataset(u, i, t, _settings(), ratings=r)
    _check(p)
    assert p.stats["kcore_rounds"] == 2 and p.stats["length_filtered_users"] == 1
    assert (p.stats["ratings"], p.stats["rating_min"], p.stats["rating_max"]) == (True, 1.0, 5.0)
    assert p.stats["rating_mean"] == pytest.approx(34 / 11)
    assert p.protocol_dict()["ratings"] is True
    # the ratings change nothing else: the same dataset as without them
    q = build_dataset(u, i, t, _settings())
    assert q.ratings is None and "ratings" not in q.protocol_dict() and "rating_min" not in q.stats
    for f in ("raw_users", "item_raw", "items_flat", "offsets", "n_train", "n_valid", "n_test",
              "cand_valid", "cand_test"):
        assert np.array_equal(getattr(p, f), getattr(q, f)), f
    # string keys (the Factorized path) and integer ratings: the same
    s = build_dataset(np.array([str(x) for x in u]), np.array([f"m{x}" for x in i]), t,
                      _settings(), ratings=r.astype(np.int64))
    _check(s)


def test_bad_ratings_are_refused_naming_the_first_bad_entry():
    u, i, r, t = _arrays()
    r = r.copy()
    r[6] = np.nan
    with pytest.raises(data_prep.DataPrepError, match="entry 6: nan"):
        build_dataset(u, i, t, _settings(), ratings=r)
    with pytest.raises(data_prep.DataPrepError, match="entry 0: 1e"):
        build_dataset(u, i, t, _settings(), ratings=np.full(len(u), 1e39))   # beyond float32
    with pytest.raises(data_prep.DataPrepError, match="same length"):
        build_dataset(u, i, t, _settings(), ratings=r[:3])
    with pytest.raises(data_prep.DataPrepError, match="must be numbers"):
        build_dataset(u, i, t, _settings(), ratings=np.array(["5"] * len(u)))


def test_storage_round_trip_and_a_folder_without_ratings_loads_as_before(tmp_path):
    u, i, r, t = _arrays()
    p = build_dataset(u, i, t, _settings(), ratings=r)
    q = load_dataset(write_dataset(p, tmp_path / "rated"))
    _check(q)
    seq = pq.read_table(tmp_path / "rated" / "sequences.parquet")
    assert seq.column_names == ["user", "raw_user", "items", "ratings"]
    assert seq.schema.field("ratings").type == pa.list_(pa.float32())
    assert json.loads((tmp_path / "rated" / "protocol.json").read_text())["ratings"] is True
    # written again from the loaded copy: the same
    _check(load_dataset(write_dataset(q, tmp_path / "again")))

    # without ratings: the columns, protocol.json and stats.json keys of every earlier folder
    plain = build_dataset(u, i, t, _settings())
    out = write_dataset(plain, tmp_path / "plain")
    assert pq.read_table(out / "sequences.parquet").column_names == ["user", "raw_user", "items"]
    assert "ratings" not in json.loads((out / "protocol.json").read_text())
    assert not {"ratings", "rating_min"} & set(json.loads((out / "stats.json").read_text()))
    back = load_dataset(out)
    assert back.ratings is None
    assert [back.sequence(k).tolist() for k in range(3)] == SEQS
    # splits, candidates and the item map are byte-identical with or without ratings
    for f in ("splits.parquet", "candidates_valid.parquet", "candidates_test.parquet",
              "item_map.parquet"):
        assert (out / f).read_bytes() == (tmp_path / "rated" / f).read_bytes(), f

    # protocol.json says ratings but the column is gone: the folder mixes two preparations
    pq.write_table(seq.drop(["ratings"]), tmp_path / "rated" / "sequences.parquet")
    with pytest.raises(data_prep.DataPrepError, match="has no column 'ratings'"):
        load_dataset(tmp_path / "rated")
    # ratings lists not aligned with the items lists
    bad = seq.set_column(3, "ratings", pa.array([[1.0], [2.0], [3.0]], pa.list_(pa.float32())))
    pq.write_table(bad, tmp_path / "rated" / "sequences.parquet")
    with pytest.raises(data_prep.DataPrepError, match="not aligned"):
        load_dataset(tmp_path / "rated")


def _text(fmt, log=LOG):
    if fmt == "movielens":
        return "".join(f"{u}::{i}::{r:g}::{1000 + t}\n" for u, i, r, t in log)
    if fmt == "ml100k":
        return "".join(f"{u}\t{i}\t{r:g}\t{1000 + t}\n" for u, i, r, t in log)
    # the columns in another order than the usual, half stars as in ML-20M
    return "timestamp,rating,userId,movieId\r\n" + "".join(
        f"{1000 + t},{r - 0.5:.1f},{u},{i}\r\n" for u, i, r, t in log)


@pytest.mark.parametrize("fmt", ["movielens", "ml100k", "movielens-csv"])
def test_the_movielens_formats_keep_the_rating_and_no_ratings_drops_it(tmp_path, capsys, fmt):
    src = tmp_path / "ratings.txt"
    src.write_text(_text(fmt))
    rc, _, err = run_cli(["--format", fmt, "--input", src, "--output", tmp_path / "out", *ARGS],
                         capsys)
    assert rc == 0, err
    assert "ratings kept: " in err
    p = load_dataset(tmp_path / "out")
    shift = 0.5 if fmt == "movielens-csv" else 0.0
    assert [p.sequence(u).tolist() for u in range(3)] == SEQS
    got = [p.ratings[p.offsets[u]:p.offsets[u + 1]].tolist() for u in range(3)]
    assert got == [[x - shift for x in row] for row in RATINGS]
    assert json.loads((tmp_path / "out" / "protocol.json").read_text())["ratings"] is True
    rc, _, err = run_cli(["--format", fmt, "--input", src, "--output", tmp_path / "plain",
                          "--no-ratings", *ARGS], capsys)
    assert rc == 0, err
    q = load_dataset(tmp_path / "plain")
    assert q.ratings is None and np.array_equal(q.items_flat, p.items_flat)
    assert np.array_equal(q.cand_test, p.cand_test)


def test_ratings_of_two_files_are_concatenated_in_order(tmp_path, capsys):
    a, b = tmp_path / "a.dat", tmp_path / "b.dat"
    a.write_text(_text("movielens", LOG[:7]))
    b.write_text(_text("movielens", LOG[7:]))
    rc, _, err = run_cli(["--format", "movielens", "--input", a, b, "--output", tmp_path / "out",
                          "--quiet", *ARGS], capsys)
    assert rc == 0, err
    _check(load_dataset(tmp_path / "out"))


def test_formats_without_ratings_keep_none_and_ratings_flag_is_refused_there(tmp_path, capsys):
    src = tmp_path / "seq.txt"
    src.write_text("1 5 6 7\n2 5 6 7\n")
    rc, _, err = run_cli(["--format", "seqlines", "--input", src, "--output", tmp_path / "out",
                          "--quiet", "--k-core", "1", "--min-len", "3", "--num-candidates", "1",
                          "--target-len", "1"], capsys)
    assert rc == 0, err
    assert load_dataset(tmp_path / "out").ratings is None
    rc, _, err = run_cli(["--format", "seqlines", "--input", src, "--output", tmp_path / "o2",
                          "--quiet", "--ratings"], capsys)
    assert rc == 2 and "--ratings: --format seqlines has no rating column" in err
