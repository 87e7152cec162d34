"""data_prep on the real datasets in ../shared/data (see its README for provenance).

The figures below were derived, not copied: the 4-core counts are the README's, and the final
figures (after the length filter and the split) were computed by the deliberately simple
pure-Python reference in this file and cross-checked against data_prep before being hard-coded.
The reference runs again here, so a change on either side shows.
"""
from __future__ import annotations

import gzip
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from data_prep import load_dataset
from tests.test_data_prep import _check_candidates, run_cli

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ML1M = DATA / "ml-1m-subset" / "ratings.dat.gz"
YOO = [DATA / "yoochoose" / "yoochoose-clicks-100k_train_full.txt.gz",
       DATA / "yoochoose" / "yoochoose-clicks-100k_test.txt.gz"]

needs_data = pytest.mark.skipif(
    not (ML1M.exists() and all(p.exists() for p in YOO)),
    reason=f"real datasets not found under {DATA} (the shared data folder beside the repository)")


# ------------------------------------------------------------------------------------------
# The reference: plain Python, one obvious step at a time (PROTOCOL sections 1 and 2).

def ref_read_movielens(path):
    rows = []
    with gzip.open(path, "rt") as f:
        for line in f:
            user, item, _rating, t = line.rstrip("\n").split("::")
            rows.append((int(user), int(item), int(t)))
    return rows


def ref_read_session_tsv(paths):
    rows = []
    for path in paths:
        with gzip.open(path, "rt") as f:
            header = f.readline().rstrip("\n").split("\t")
            assert header == ["SessionId", "ItemId", "Time"]
            for line in f:
                s, i, t = line.rstrip("\n").split("\t")
                rows.append((int(s), int(i), float(t)))
    return rows


def ref_prepare(rows, k, min_len, max_len, cap):
    # sequences: by time, ties in file order (the position breaks ties)
    by_user = {}
    for pos, (user, item, t) in enumerate(rows):
        by_user.setdefault(user, []).append((t, pos, item))
    seqs = {u: [item for _t, _pos, item in sorted(v)] for u, v in by_user.items()}
    # iterative k-core: drop short users and rare items until nothing changes
    while True:
        item_count = Counter(i for s in seqs.values() for i in s)
        new = {}
        for u, s in seqs.items():
            if len(s) < k:
                continue
            kept = [i for i in s if item_count[i] >= k]
            if kept:
                new[u] = kept
        if new == seqs:
            break
        seqs = new
    kcore = (len(seqs), len({i for s in seqs.values() for i in s}),
             sum(len(s) for s in seqs.values()))
    # the length filter, once
    seqs = {u: s for u, s in seqs.items()
            if len(s) >= min_len and (max_len is None or len(s) <= max_len)}
    users = sorted(seqs)  # all ids are integers: numeric order
    new_id = {}
    for u in users:
        for i in seqs[u]:
            if i not in new_id:
                new_id[i] = len(new_id) + 1
    sequences = [[new_id[i] for i in seqs[u]] for u in users]
    splits = []
    for s in sequences:
        h = min(math.ceil(len(s) / 5), cap)
        splits.append((len(s) - 2 * h, h, h))
    items_by_id = sorted(new_id, key=new_id.get)
    return kcore, users, items_by_id, sequences, splits


def ref_stats(sequences, splits):
    lens = [len(s) for s in sequences]
    return {"users": len(sequences), "items": len({i for s in sequences for i in s}),
            "interactions": sum(lens), "min_len": min(lens), "max_len": max(lens),
            "avg_len": sum(lens) / len(lens), "train_items": sum(a for a, _, _ in splits),
            "valid_items": sum(b for _, b, _ in splits), "test_items": sum(c for _, _, c in splits)}


def assert_matches_reference(p, rows, k, min_len, max_len, cap):
    kcore, users, items, sequences, splits = ref_prepare(rows, k, min_len, max_len, cap)
    st = p.stats
    assert (st["kcore_users"], st["kcore_items"], st["kcore_interactions"]) == kcore
    assert p.raw_users.tolist() == [str(u) for u in users]
    assert p.item_raw.tolist() == [""] + [str(i) for i in items]
    assert p.items_flat.tolist() == [i for s in sequences for i in s]
    assert np.diff(p.offsets).tolist() == [len(s) for s in sequences]
    assert list(zip(p.n_train.tolist(), p.n_valid.tolist(), p.n_test.tolist())) == splits
    ref = ref_stats(sequences, splits)
    assert {key: st[key] for key in ref} == pytest.approx(ref)
    return kcore


# ------------------------------------------------------------------------------------------

ML1M_STATS = {"users": 2096, "items": 3322, "interactions": 457740, "min_len": 50,
              "max_len": 1847, "avg_len": 457740 / 2096, "train_items": 300830,
              "valid_items": 78455, "test_items": 78455}
YOO_STATS = {"users": 691, "items": 1732, "interactions": 11864, "min_len": 12, "max_len": 77,
             "avg_len": 11864 / 691, "train_items": 6690, "valid_items": 2587, "test_items": 2587}


@needs_data
def test_ml1m_subset_movielens_profile(tmp_path, capsys):
    out = tmp_path / "ml-1m-subset"
    rc, stdout, err = run_cli(["--format", "movielens", "--input", ML1M, "--output", out,
                               "--profile", "movielens"], capsys)
    assert rc == 0, err
    assert stdout.split()[-5:] == ["2,096", "3,322", "50", "1,847", "218.39"]
    st = json.loads((out / "stats.json").read_text())
    assert {k: st[k] for k in ML1M_STATS} == pytest.approx(ML1M_STATS)
    # raw and README 4-core figures (2,999 users, 3,322 items, 487,131 interactions)
    assert (st["raw_users"], st["raw_items"], st["raw_interactions"]) == (2999, 3615, 487650)
    assert (st["kcore_users"], st["kcore_items"], st["kcore_interactions"]) == (2999, 3322, 487131)
    assert (st["kcore_min_len"], st["kcore_max_len"], round(st["kcore_avg_len"], 2)) == \
        (17, 1847, 162.43)
    assert st["users_short_candidates"] == 0
    p = load_dataset(out)
    assert p.cand_test.shape == (2096, 1000) and p.settings.ban_history is True
    assert_matches_reference(p, ref_read_movielens(ML1M), 4, 50, None, 80)
    _check_candidates(p)


@needs_data
def test_yoochoose_100k_sample_yoochoose_profile(tmp_path, capsys):
    out = tmp_path / "yoochoose-100k"
    rc, stdout, err = run_cli(["--format", "session-tsv", "--input", *YOO, "--output", out,
                               "--profile", "yoochoose"], capsys)
    assert rc == 0, err
    st = json.loads((out / "stats.json").read_text())
    assert {k: st[k] for k in YOO_STATS} == pytest.approx(YOO_STATS)
    assert (st["raw_users"], st["raw_items"], st["raw_interactions"]) == (21210, 2933, 83846)
    # README: combined iterative 4-core = 7,487 sessions, 2,320 items, 50,646 clicks
    assert (st["kcore_users"], st["kcore_items"], st["kcore_interactions"]) == (7487, 2320, 50646)
    assert (st["kcore_min_len"], st["kcore_max_len"], round(st["kcore_avg_len"], 2)) == \
        (4, 77, 6.76)
    assert st["rows_per_file"] == [70278, 13568]
    assert st["users_short_candidates"] == 0
    p = load_dataset(out)
    assert (p.n_test <= 6).all() and p.settings.ban_history is False
    assert_matches_reference(p, ref_read_session_tsv(YOO), 4, 12, 200, 6)
    _check_candidates(p)


# The README's 4-core figures of the other real files (reading + k-core only).
OTHER = [("movielens-csv", ["ml-latest-small/ratings.csv.gz"], (610, 9724, 100836),
          (610, 4180, 92394)),
         ("ml100k", ["ml-100k/u.data.gz"], (943, 1682, 100000), (943, 1413, 99543)),
         ("session-tsv", ["yoochoose/rsc15_test.txt.gz"], (15324, 6751, 71222),
          (5572, 1321, 42481))]


@pytest.mark.parametrize("fmt,files,raw,kcore", OTHER)
def test_other_real_files_readme_4core(tmp_path, capsys, fmt, files, raw, kcore):
    paths = [DATA / f for f in files]
    if not all(p.exists() for p in paths):
        pytest.skip(f"real dataset {files} not found under {DATA}")
    out = tmp_path / "o"
    rc, _, err = run_cli(["--format", fmt, "--input", *paths, "--output", out, "--profile",
                          "default", "--num-candidates", "10", "--target-len", "5"], capsys)
    assert rc == 0, err
    st = load_dataset(out).stats
    assert (st["raw_users"], st["raw_items"], st["raw_interactions"]) == raw
    assert (st["kcore_users"], st["kcore_items"], st["kcore_interactions"]) == kcore
