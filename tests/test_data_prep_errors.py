"""data_prep on bad input: a one-line message naming the file and line, exit code 2, and no
output folder (nor temporary folder) left behind."""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import data_prep
from tests.test_data_prep import TINY_ARGS, run_cli, tiny_text

REPO = Path(__file__).resolve().parents[1]

GOOD_ML = "1::10::5::100\n1::11::4::101\n1::12::3::102\n"

# (format, file name, content, extra flags, expected line number or None, expected words)
BAD = [
    ("movielens", "ratings.dat", GOOD_ML + "1::13::5\n", [], 4, ["4 fields", "'::'"]),
    ("movielens", "ratings.dat", GOOD_ML + "1::13::5::100::7\n", [], 4, ["4 fields"]),
    ("movielens", "ratings.dat", GOOD_ML + "1:13::5::100\n", [], 4, ["4 fields"]),
    ("movielens", "ratings.dat", GOOD_ML + "x1::13::5::100\n", [], 4, ["UserID", "integer"]),
    ("movielens", "ratings.dat", GOOD_ML + "::13::5::100\n", [], 4, ["UserID", "integer"]),
    ("movielens", "ratings.dat", GOOD_ML + "1::13.5::5::100\n", [], 4, ["MovieID", "integer"]),
    ("movielens", "ratings.dat", GOOD_ML + "1::13::5::2001-01-01\n", [], 4,
     ["Timestamp", "integer"]),
    ("movielens", "ratings.dat.gz", GOOD_ML * 50 + "1::13::5::1e9\n", [], 151, ["Timestamp"]),
    ("movielens", "ratings.dat", GOOD_ML + "\n1::13::5::x\n", [], 5, ["Timestamp"]),  # blank line
    ("ml100k", "u.data", "1\t10\t5\t100\n1\t11\t5\n", [], 2, ["4 fields"]),
    ("ml100k", "u.data", "1\t10\t5\t100\n1\t11\t5\t100\t9\n", [], 2, ["4 fields"]),
    ("ml100k", "u.data", "1\t10\t5\t100\n1,11,5,100\n", [], 2, ["4 fields"]),
    ("ml100k", "u.data", "1\t10\t5\t100\n1\t11\t5\tabc\n", [], 2, ["timestamp", "integer"]),
    ("ml100k", "u.data", "1\t10\t5\t100\nbob\t11\t5\t100\n", [], 2, ["user id", "integer"]),
    ("movielens-csv", "ratings.csv", "userId,movieId,rating,timestamp\r\n1,10,4.0,100\r\n"
     "1,11,4.0,101\r\nabc,12,4.0,102\r\n", [], 4, ["userId", "integer"]),
    ("movielens-csv", "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,100\n1,11\n",
     [], 3, ["4 fields"]),
    ("movielens-csv", "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,100\n"
     "1,11,4.0,\n", [], 3, ["timestamp", "integer"]),
    ("movielens-csv", "ratings.csv", "user,movieId,rating,timestamp\n1,10,4.0,100\n", [], 1,
     ["missing", "userId"]),
    # the ratings are kept: each one a finite number (float32)
    ("movielens", "ratings.dat", GOOD_ML + "1::13::nan::103\n", [], 4,
     ["Rating 'nan' is not a finite number"]),
    ("movielens", "ratings.dat", GOOD_ML + "1::13::::103\n", [], 4, ["Rating ''", "finite"]),
    ("ml100k", "u.data", "1\t10\t5\t100\n1\t11\tinf\t101\n", [], 2,
     ["rating 'inf' is not a finite number"]),
    ("movielens-csv", "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,100\n"
     "1,11,five,101\n", [], 3, ["rating 'five' is not a finite number"]),
    ("movielens-csv", "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,100\n"
     "1,11,1e39,101\n", [], 3, ["rating '1e39'", "float32"]),
    ("movielens-csv", "ratings.csv", "userId,movieId,timestamp\n1,10,100\n", [], 1,
     ["missing rating column 'rating'", "--no-ratings"]),
    ("yoochoose", "clicks.dat", "1,2014-04-07T10:51:09.277Z,214536502,0\n"
     "1,2014-04-07 sometime,214536500,0\n", [], 2, ["Timestamp", "ISO-8601"]),
    ("yoochoose", "clicks.dat", "1,2014-04-07T10:51:09.277Z,214536502,0\n"
     "1,2014-04-07T10:52:09.277Z,214536500\n", [], 2, ["4 fields"]),
    ("yoochoose", "clicks.dat", "1,2014-04-07T10:51:09.277Z,214536502,0\n"
     "1,2014-04-07T10:52:09.277Z,P214536500,S\n", [], 2, ["ItemID", "integer"]),
    ("session-tsv", "s.txt", "SessionId\tItemId\tTime\n1\t10\t1396437466.94\n1\t11\tnan\n", [], 3,
     ["Time", "number"]),
    ("session-tsv", "s.txt", "SessionId\tItemId\tTime\n1\t10\t1396437466.94\n1\t11\t12:00\n", [],
     3, ["Time", "number"]),
    ("session-tsv", "s.txt", "SessionId\tItemId\n1\t10\n", [], 1, ["missing", "Time"]),
    ("csv", "log.csv", "user,item,time\nu1,a,1\nu1,b,2\nu1,c\n", [], 4, ["3 fields"]),
    ("csv", "log.csv", "user,item,time\nu1,a,1\nu1,b,2\nu1,c,yesterday\n", [], 4,
     ["time", "number"]),
    ("csv", "log.csv", "user,item,time\nu1,a,2020-01-01\nu1,b,2020-01-02\nu1,c,3\n", [], 4,
     ["time", "ISO-8601"]),
    ("csv", "log.csv", "user,item,time\nu1,a,1\n,b,2\n", [], 3, ["empty value", "'user'"]),
    ("csv", "log.csv", "uid,item,time\nu1,a,1\n", [], 1, ["missing", "user", "uid"]),
    ("csv", "log.csv", "user;item;time\nu1;a;1\n", ["--user-col", "user"], 1, ["missing"]),
]


def _make(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(content.encode())
    else:
        path.write_bytes(content.encode())
    return path


def _assert_failed(rc, err, tmp_path, inputs, words=(), path=None, line=None):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err                      # one line (with --quiet), no traceback
    msg = lines[0]
    assert msg.startswith("data_prep: error: ")
    if path is not None:
        assert str(path) in msg
    if line is not None:
        assert f"line {line}:" in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in inputs)  # no output, no tmp
    return msg


@pytest.mark.parametrize("fmt,name,content,extra,line,words", BAD)
def test_bad_input_names_file_and_line(tmp_path, capsys, fmt, name, content, extra, line, words):
    src = _make(tmp_path, name, content)
    rc, out, err = run_cli(["--format", fmt, "--input", src, "--output", tmp_path / "out",
                            "--quiet", *TINY_ARGS, *extra], capsys)
    _assert_failed(rc, err, tmp_path, [src], words, src, line)


def test_bad_line_in_second_file(tmp_path, capsys):
    a = _make(tmp_path, "a.dat", GOOD_ML)
    b = _make(tmp_path, "b.dat", GOOD_ML + GOOD_ML + "1::2::3::4::5\n")
    rc, _, err = run_cli(["--format", "movielens", "--input", a, b, "--output", tmp_path / "o",
                          "--quiet", *TINY_ARGS], capsys)
    _assert_failed(rc, err, tmp_path, [a, b], ["4 fields"], b, 7)


@pytest.mark.parametrize("fmt,name,content,words", [
    ("movielens", "empty.dat", "", ["empty input"]),
    ("movielens", "empty.dat.gz", "", ["empty input"]),
    ("movielens", "blank.dat", "\n\n", ["empty input"]),
    ("movielens-csv", "empty.csv", "", ["empty file"]),
    ("movielens-csv", "header.csv", "userId,movieId,rating,timestamp\r\n", ["empty input"]),
    ("session-tsv", "header.txt", "SessionId\tItemId\tTime\n", ["empty input"]),
    ("csv", "header.csv", "user,item,time\n", ["empty input"]),
])
def test_empty_input(tmp_path, capsys, fmt, name, content, words):
    src = _make(tmp_path, name, content)
    rc, _, err = run_cli(["--format", fmt, "--input", src, "--output", tmp_path / "out", "--quiet"],
                         capsys)
    _assert_failed(rc, err, tmp_path, [src], words, src)


def test_missing_input_file_and_not_gzip(tmp_path, capsys):
    rc, _, err = run_cli(["--format", "movielens", "--input", tmp_path / "nope.dat", "--output",
                          tmp_path / "out", "--quiet"], capsys)
    _assert_failed(rc, err, tmp_path, [], ["no such file"], tmp_path / "nope.dat")
    fake = tmp_path / "fake.dat.gz"                  # named .gz but not gzip
    fake.write_text(GOOD_ML)
    rc, _, err = run_cli(["--format", "movielens", "--input", fake, "--output", tmp_path / "out",
                          "--quiet"], capsys)
    _assert_failed(rc, err, tmp_path, [fake], ["not gzip"], fake)
    trunc = tmp_path / "trunc.dat.gz"                # a gzip stream cut short
    rng = np.random.default_rng(0)
    text = "".join(f"1::{rng.integers(10**6)}::3::{rng.integers(10**9)}\n" for _ in range(3000))
    full = gzip.compress(text.encode())
    trunc.write_bytes(full[:len(full) // 2])
    rc, _, err = run_cli(["--format", "movielens", "--input", trunc, "--output", tmp_path / "out",
                          "--quiet"], capsys)
    _assert_failed(rc, err, tmp_path, [fake, trunc], ["ended before"], trunc)


def test_nothing_left_after_filtering(tmp_path, capsys):
    src = _make(tmp_path, "r.dat", tiny_text("movielens"))
    rc, _, err = run_cli(["--format", "movielens", "--input", src, "--output", tmp_path / "out",
                          "--quiet"], capsys)          # k-core 4 removes everything
    _assert_failed(rc, err, tmp_path, [src], ["nothing left after filtering", "4-core removed"])
    rc, _, err = run_cli(["--format", "movielens", "--input", src, "--output", tmp_path / "out",
                          "--quiet", "--k-core", "1"], capsys)  # min length 50
    _assert_failed(rc, err, tmp_path, [src], ["nothing left after filtering", "[50, inf]",
                                              "lengths 3..4"])
    with pytest.raises(data_prep.DataPrepError, match="nothing left"):
        data_prep.build_dataset(np.array([1, 1]), np.array([1, 2]), np.array([0, 1]),
                                data_prep.settings_for("default"))


def test_existing_output_refused_without_overwrite(tmp_path, capsys):
    src = _make(tmp_path, "r.dat", tiny_text("movielens"))
    out = tmp_path / "out"
    args = ["--format", "movielens", "--input", src, "--output", out, "--quiet", *TINY_ARGS]
    assert run_cli(args, capsys)[0] == 0
    before = (out / "candidates_test.parquet").read_bytes()
    rc, _, err = run_cli(args + ["--seed", "3"], capsys)
    assert rc == 2 and "already exists" in err and "--overwrite" in err
    assert (out / "candidates_test.parquet").read_bytes() == before
    rc, _, err = run_cli(args + ["--seed", "3", "--overwrite"], capsys)
    assert rc == 0, err
    assert sorted(os.listdir(tmp_path)) == ["out", "r.dat"]
    # a failing run with --overwrite leaves the existing dataset untouched
    bad = _make(tmp_path, "bad.dat", "1::2::3\n")
    rc, _, err = run_cli(["--format", "movielens", "--input", bad, "--output", out, "--quiet",
                          "--overwrite"], capsys)
    assert rc == 2 and "line 1" in err
    assert data_prep.load_dataset(out).settings.seed == 3
    # never replaces a folder that is not a prepared dataset
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.tex").write_text("...")
    rc, _, err = run_cli(["--format", "movielens", "--input", src, "--output", other, "--quiet",
                          "--overwrite", *TINY_ARGS], capsys)
    assert rc == 2 and "does not look like a prepared dataset" in err
    assert (other / "thesis.tex").exists()


def test_missing_parent_folders_are_made_only_on_success(tmp_path, capsys):
    src = _make(tmp_path, "r.dat", tiny_text("movielens"))
    bad = _make(tmp_path, "bad.dat", "1::2::3\n")
    rc, _, err = run_cli(["--format", "movielens", "--input", bad, "--output",
                          tmp_path / "data" / "sub" / "out", "--quiet", *TINY_ARGS], capsys)
    _assert_failed(rc, err, tmp_path, [src, bad], ["4 fields"], bad, 1)   # no data/ left behind
    out = tmp_path / "data" / "sub" / "out"
    rc, _, err = run_cli(["--format", "movielens", "--input", src, "--output", out, "--quiet",
                          *TINY_ARGS], capsys)
    assert rc == 0, err
    assert (out / "protocol.json").exists() and sorted(os.listdir(out.parent)) == ["out"]
    blocker = _make(tmp_path, "afile", "x")                # a parent that is a file
    rc, _, err = run_cli(["--format", "movielens", "--input", src, "--output",
                          blocker / "out", "--quiet", *TINY_ARGS], capsys)
    assert rc == 2 and "is not a folder" in err and str(blocker) in err


def test_bad_flags(tmp_path, capsys):
    src = _make(tmp_path, "r.dat", tiny_text("movielens"))
    base = ["--format", "movielens", "--input", src, "--output", tmp_path / "out", "--quiet"]
    for extra, word in ((["--user-col", "u"], "--format csv"), (["--min-len", "2"], "min_len"),
                        (["--protocol", "loo", "--cap", "4"], "loo"),
                        (["--num-candidates", "3"], "num_candidates"),
                        (["--profile", "netflix"], "invalid choice")):
        rc, _, err = run_cli(base + extra, capsys)
        _assert_failed(rc, err, tmp_path, [src], [word])


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    src = _make(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,100\n"
                "1,eleven,4.0,101\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "data_prep", "--format", "movielens-csv", "--input",
                        str(src), "--output", str(tmp_path / "out")], capture_output=True,
                       text=True, cwd=tmp_path, env=env)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"data_prep: error: {src}, line 3: movieId 'eleven' is not an integer: "
        f"'1,eleven,4.0,101'")
    assert sorted(os.listdir(tmp_path)) == ["ratings.csv"]
