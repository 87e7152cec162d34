"""Readers: raw interaction logs -> (user keys, item keys, times) numpy arrays, in file order,
and the ratings (float32) of the formats that have a rating column (the MovieLens ones).

Parsing is done by pyarrow.csv with explicit column types (no Python object per row). When
pyarrow refuses a file (or a value check after it fails), a streaming line scan re-reads the
file with the same rules and names the first bad line; that scan only runs on bad input.
``seqlines`` (one user a line, no times) is parsed by numpy over the raw bytes, in blocks of
whole lines, and names its first bad line directly.
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import math
import os
import re
import time as _time
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .errors import DataPrepError
from .pipeline import Factorized

FORMATS = ("movielens", "movielens-csv", "ml100k", "yoochoose", "session-tsv", "csv",
           "seqlines")

_INT_RE = re.compile(r"-?[0-9]+\Z")
_FLOAT_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")
_BLOCK = 16 << 20
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class FormatSpec:
    name: str
    delimiter: str
    header: bool            # first line names the columns
    quoting: bool           # double-quoted fields allowed
    ncols: Optional[int]    # headerless formats: exact number of fields
    user: object            # column index (headerless) or name (header)
    item: object
    time: object
    id_kind: str            # 'int' or 'str'
    time_kind: str          # 'int' | 'float' | 'iso' | 'auto' (numeric or ISO-8601) | 'position'
    labels: tuple = ("user id", "item id", "timestamp")
    layout: str = ""        # human description of a line, for messages
    rating: object = None   # the rating's column index (headerless) or name; None: no ratings
    rating_label: str = ""


def format_spec(fmt: str, user_col: str = "user", item_col: str = "item",
                time_col: str = "time", delimiter: str = ",") -> FormatSpec:
    if fmt == "movielens":
        return FormatSpec(fmt, ":", False, False, 7, 0, 2, 6, "int", "int",
                          ("UserID", "MovieID", "Timestamp"),
                          "UserID::MovieID::Rating::Timestamp", 4, "Rating")
    if fmt == "ml100k":
        return FormatSpec(fmt, "\t", False, False, 4, 0, 1, 3, "int", "int",
                          ("user id", "item id", "timestamp"),
                          "user<TAB>item<TAB>rating<TAB>timestamp", 2, "rating")
    if fmt == "movielens-csv":
        return FormatSpec(fmt, ",", True, True, None, "userId", "movieId", "timestamp",
                          "int", "int", ("userId", "movieId", "timestamp"),
                          "userId,movieId,rating,timestamp", "rating", "rating")
    if fmt == "yoochoose":
        return FormatSpec(fmt, ",", False, True, 4, 0, 2, 1, "int", "iso",
                          ("SessionID", "ItemID", "Timestamp"),
                          "SessionID,Timestamp,ItemID,Category")
    if fmt == "session-tsv":
        return FormatSpec(fmt, "\t", True, False, None, "SessionId", "ItemId", "Time",
                          "int", "float", ("SessionId", "ItemId", "Time"),
                          "SessionId<TAB>ItemId<TAB>Time")
    if fmt == "seqlines":  # one user a line, no time: time = running position in the input
        return FormatSpec(fmt, " ", False, False, None, 0, 1, None, "int", "position",
                          ("user id", "item id", "position"),
                          "user item [item ...], separated by spaces or tabs")
    if fmt == "csv":
        if len(delimiter) != 1:
            raise DataPrepError(f"--delimiter must be one character, got {delimiter!r}")
        return FormatSpec(fmt, delimiter, True, True, None, user_col, item_col, time_col, "str",
                          "auto", (user_col, item_col, time_col), "")
    raise DataPrepError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")


@dataclass
class RawLog:
    users: object           # int64 array or Factorized
    items: object
    times: np.ndarray       # int64 (integer seconds or ISO as ns) or float64
    rows_per_file: list
    seconds: float
    ratings: Optional[np.ndarray] = None    # float32, aligned with the rows; None: no ratings


# --------------------------------------------------------------------------------------------
# small helpers


def _is_gzip(path: str) -> bool:
    """gzip by content (magic bytes); a '.gz' name on a file that is not gzip is an error."""
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
    except OSError as e:
        raise DataPrepError(f"cannot read: {e.strerror or e}", path) from None
    if magic == b"\x1f\x8b":
        return True
    if path.endswith(".gz") and magic:
        raise DataPrepError("named .gz but not gzip-compressed", path)
    return False


def _open_binary(path: str):
    if _is_gzip(path):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _input_stream(path: str):
    return pa.input_stream(path, compression="gzip" if _is_gzip(path) else None,
                           buffer_size=_BLOCK)


def _strip_eol(raw: bytes) -> bytes:
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw


def _snippet(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _split(text: str, spec: FormatSpec) -> list:
    if spec.name == "movielens":
        return text.split("::")
    if spec.quoting:
        return next(csv.reader([text], delimiter=spec.delimiter, quotechar='"'))
    return text.split(spec.delimiter)


def _first_lines(path: str, n: int) -> list:
    """The first ``n`` non-empty lines (decoded, without line ends), as (line number, text)."""
    out = []
    try:
        with _open_binary(path) as f:
            for lineno, raw in enumerate(f, 1):
                line = _strip_eol(raw)
                if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]
                if line or lineno == 1:
                    out.append((lineno, line.decode("utf-8", errors="replace")))
                if len(out) >= n:
                    break
    except (OSError, EOFError) as e:
        raise DataPrepError(f"cannot read: {e}", path) from None
    return out


def _zoned(s: str) -> bool:
    try:
        return datetime.fromisoformat(s.strip()).tzinfo is not None
    except ValueError:
        return True


def _is_number(s: str) -> bool:
    return _FLOAT_RE.match(s) is not None


# --------------------------------------------------------------------------------------------
# line-by-line validation (the fallback that names the first bad line)


class _LineRules:
    def __init__(self, spec: FormatSpec, ncols: int, idx: tuple, time_mode: str,
                 rating_idx: Optional[int] = None):
        self.spec, self.ncols, self.idx, self.time_mode = spec, ncols, idx, time_mode
        self.rating_idx = rating_idx      # field of the rating (after _split); None: not read
        self._auto_hint = (" (the first data row decides between numbers and ISO-8601)"
                           if spec.time_kind == "auto" else "")

    def check(self, text: str) -> Optional[str]:
        spec = self.spec
        try:
            fields = _split(text, spec)
        except csv.Error as e:
            return f"malformed line ({e}): {_snippet(text)}"
        if spec.name == "movielens":
            if len(fields) != 4 or any(":" in f for f in fields):
                return (f"expected 4 fields separated by '::' ({spec.layout}), "
                        f"found {len(text.split('::'))}: {_snippet(text)}")
        elif len(fields) != self.ncols:
            what = f" ({spec.layout})" if spec.layout else ""
            return f"expected {self.ncols} fields{what}, found {len(fields)}: {_snippet(text)}"
        iu, ii, it = (0, 1, 3) if spec.name == "movielens" else self.idx
        for k, label in ((iu, spec.labels[0]), (ii, spec.labels[1])):
            v = fields[k]
            if spec.id_kind == "int":
                if _INT_RE.match(v) is None or not (-2**63 <= int(v) < 2**63):
                    return f"{label} {_snippet(v)} is not an integer: {_snippet(text)}"
            elif v == "":
                return f"empty value in column {label!r}: {_snippet(text)}"
            elif "\ufffd" in v:
                return f"{label} is not valid UTF-8: {_snippet(text)}"
        if self.rating_idx is not None:
            v = fields[self.rating_idx]
            if not _is_number(v) or not abs(float(v)) <= _FLOAT32_MAX:
                return (f"{spec.rating_label} {_snippet(v)} is not a finite number (ratings are "
                        f"kept as float32): {_snippet(text)}")
        v = fields[it]
        label = spec.labels[2]
        mode = self.time_mode
        if mode == "int":
            if _INT_RE.match(v) is None or not (-2**63 <= int(v) < 2**63):
                return f"{label} {_snippet(v)} is not an integer (Unix seconds): {_snippet(text)}"
        elif mode == "float":
            if not _is_number(v) or not math.isfinite(float(v)):
                return f"{label} {_snippet(v)} is not a number{self._auto_hint}: {_snippet(text)}"
        elif mode in ("iso-zoned", "iso-naive"):
            try:
                dt = datetime.fromisoformat(v)
            except ValueError:
                return (f"{label} {_snippet(v)} is not an ISO-8601 date-time{self._auto_hint}: "
                        f"{_snippet(text)}")
            if (dt.tzinfo is not None) != (mode == "iso-zoned"):
                first = "has" if mode == "iso-zoned" else "has no"
                return (f"{label} {_snippet(v)} mixes time zones: the first row's time {first} a "
                        f"zone offset and this one does not match: {_snippet(text)}")
        return None


def _scan(path: str, rules: _LineRules, header: bool) -> Optional[DataPrepError]:
    """Stream the file line by line; the error for the first bad line, or None."""
    data_lines = 0
    try:
        with _open_binary(path) as f:
            for lineno, raw in enumerate(f, 1):
                if header and lineno == 1:
                    continue
                line = _strip_eol(raw)
                if not line:
                    continue
                data_lines += 1
                text = line.decode("utf-8", errors="replace")
                reason = rules.check(text)
                if reason is not None:
                    return DataPrepError(reason, path, lineno)
    except (OSError, EOFError) as e:
        return DataPrepError(f"cannot read: {e}", path)
    if data_lines == 0:
        return DataPrepError("no interactions (empty input)", path)
    return None


# --------------------------------------------------------------------------------------------
# one file


def _header(path: str, spec: FormatSpec) -> tuple[int, tuple, Optional[int]]:
    lines = _first_lines(path, 1)
    if not lines:
        raise DataPrepError("empty file (expected a header line)", path)
    text = lines[0][1]
    try:
        names = [c.strip() for c in _split(text, spec)]
    except csv.Error as e:
        raise DataPrepError(f"malformed header ({e})", path, 1) from None
    idx = []
    for col, role in ((spec.user, "user"), (spec.item, "item"), (spec.time, "time")):
        if col not in names:
            raise DataPrepError(f"missing {role} column {col!r} in the header "
                                f"(columns: {', '.join(names) or 'none'})", path, 1)
        idx.append(names.index(col))
    if len(set(idx)) < 3:
        raise DataPrepError("user, item and time columns must be three different columns", path, 1)
    rating = None
    if spec.rating is not None:
        if spec.rating not in names:
            raise DataPrepError(f"missing rating column {spec.rating!r} in the header (columns: "
                                f"{', '.join(names)}); --no-ratings reads the file without "
                                "ratings", path, 1)
        rating = names.index(spec.rating)
    return len(names), tuple(idx), rating


def _decide_time_mode(path: str, spec: FormatSpec, idx: tuple, ncols: int) -> str:
    if spec.time_kind in ("int", "float"):
        return spec.time_kind
    # 'iso' / 'auto': decided by the first data row.
    lines = _first_lines(path, 2 if spec.header else 1)
    data = lines[1:] if spec.header else lines
    if not data or not data[0][1]:
        return "iso-zoned" if spec.time_kind == "iso" else "float"
    try:
        fields = _split(data[0][1], spec)
        v = fields[idx[2]]
    except (csv.Error, IndexError):
        return "iso-zoned" if spec.time_kind == "iso" else "float"
    if spec.time_kind == "auto" and _is_number(v):
        return "float"
    return "iso-zoned" if _zoned(v) else "iso-naive"


def _to_numpy(col: pa.ChunkedArray) -> np.ndarray:
    if col.num_chunks == 0:
        return np.zeros(0, dtype=col.type.to_pandas_dtype())
    return col.combine_chunks().to_numpy(zero_copy_only=False) if col.num_chunks > 1 \
        else col.chunk(0).to_numpy(zero_copy_only=False)


def _read_one(path: str, spec: FormatSpec):
    """-> (users, items, times, n_rows, time mode, ratings) for one file; users/items are
    np.int64 or pa arrays, ratings float32 (None when ``spec.rating`` is None)."""
    if not os.path.exists(path):
        raise DataPrepError("no such file", path)
    if os.path.isdir(path):
        raise DataPrepError("is a folder, not a file", path)
    if spec.header:
        ncols, idx, ir_col = _header(path, spec)
    else:
        ncols, idx, ir_col = spec.ncols, (spec.user, spec.item, spec.time), spec.rating
    time_mode = _decide_time_mode(path, spec, idx, ncols)
    # the rating's field in a line as _split cuts it ('::' lines: every other ':' field)
    ir_field = None if ir_col is None else (ir_col // 2 if spec.name == "movielens" else ir_col)
    rules = _LineRules(spec, ncols, idx, time_mode, ir_field)

    names = [f"c{j}" for j in range(ncols)]
    iu, ii, it = (names[j] for j in idx)
    ir = None if ir_col is None else names[ir_col]
    id_type = pa.int64() if spec.id_kind == "int" else pa.dictionary(pa.int32(), pa.string())
    if time_mode == "int":
        t_type = pa.int64()
    elif time_mode == "float":
        t_type = pa.string() if spec.time_kind == "auto" else pa.float64()
    elif time_mode == "iso-zoned":
        t_type = pa.timestamp("ns", tz="UTC")
    else:
        t_type = pa.timestamp("ns")
    types = {iu: id_type, ii: id_type, it: t_type}
    include = [iu, ii, it]
    if ir is not None:
        types[ir] = pa.float64()
        include.append(ir)
    if spec.name == "movielens":  # the empty fields between '::' separators must stay empty
        for j in (1, 3, 5):
            types[names[j]] = pa.null()
            include.append(names[j])
    read_opts = pacsv.ReadOptions(column_names=names, skip_rows=1 if spec.header else 0,
                                  block_size=_BLOCK, use_threads=True)
    parse_opts = pacsv.ParseOptions(delimiter=spec.delimiter,
                                    quote_char='"' if spec.quoting else False,
                                    newlines_in_values=False, ignore_empty_lines=True)
    conv_opts = pacsv.ConvertOptions(column_types=types, include_columns=include,
                                     null_values=[""] if spec.name == "movielens" else [],
                                     strings_can_be_null=False, quoted_strings_can_be_null=False,
                                     check_utf8=True)

    def fail(message: str):
        err = _scan(path, rules, spec.header)
        if err is not None:
            raise err
        raise DataPrepError(message, path)

    try:
        with _input_stream(path) as stream:
            table = pacsv.read_csv(stream, read_options=read_opts, parse_options=parse_opts,
                                   convert_options=conv_opts)
    except (pa.ArrowInvalid, pa.ArrowException, OSError, EOFError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        fail(f"cannot parse: {msg}")
    n = table.num_rows
    if n == 0:
        raise DataPrepError("no interactions (empty input)", path)

    cols = {}
    for name in (iu, ii, it) + ((ir,) if ir is not None else ()):
        if table.column(name).null_count:
            fail(f"column {name} has empty values")
    ratings = None
    if ir is not None:
        with np.errstate(over="ignore"):            # beyond float32 -> inf, refused below
            ratings = _to_numpy(table.column(ir)).astype(np.float32)
        if not np.all(np.isfinite(ratings)):        # NaN, inf, or beyond float32
            fail(f"non-finite {spec.rating_label} values")
    for role, name in (("user", iu), ("item", ii)):
        col = table.column(name)
        if spec.id_kind == "int":
            cols[role] = _to_numpy(col).astype(np.int64, copy=False)
        else:
            col = pa.table({"x": col}).unify_dictionaries().column("x")
            dictionary = col.chunk(0).dictionary if col.num_chunks else pa.array([], pa.string())
            if pc.any(pc.equal(dictionary, "")).as_py():
                fail(f"empty {role} id")
            cols[role] = (col, dictionary)
    tcol = table.column(it)
    del table
    if time_mode == "int":
        times = _to_numpy(tcol).astype(np.int64, copy=False)
    elif time_mode == "float" and spec.time_kind != "auto":
        times = _to_numpy(tcol).astype(np.float64, copy=False)
        if not np.all(np.isfinite(times)):
            fail("non-finite times")
    elif time_mode == "float":  # generic CSV, numeric: integers if all are, else floats
        times = None
        try:
            times = _to_numpy(pc.cast(tcol, pa.int64())).astype(np.int64, copy=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            try:
                times = _to_numpy(pc.cast(tcol, pa.float64())).astype(np.float64, copy=False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                fail(f"non-numeric time: {str(e).splitlines()[0]}")
            if not np.all(np.isfinite(times)):
                fail("non-finite times")
    else:
        times = _to_numpy(pc.cast(tcol, pa.int64())).astype(np.int64, copy=False)
    return cols["user"], cols["item"], times, n, time_mode, ratings


# --------------------------------------------------------------------------------------------
# one user a line (--format seqlines): "user item item ...", whitespace separated, no times

_SEQ_BLOCK = 4 << 20
_WS = np.zeros(256, dtype=bool)
_WS[[9, 10, 11, 12, 13, 32]] = True          # tab, LF, VT, FF, CR, space (bytes.split's set)
_DIGIT = np.zeros(256, dtype=bool)
_DIGIT[48:58] = True
_POW10 = 10 ** np.arange(19, dtype=np.int64)
_MAX_DIGITS = 18                              # 18 decimal digits always fit in an int64


def _line_at(buf: bytes, pos: int) -> str:
    """The text of the line of ``buf`` that holds byte ``pos`` (for messages)."""
    start = buf.rfind(b"\n", 0, pos) + 1
    end = buf.find(b"\n", pos)
    return _strip_eol(buf[start:end if end >= 0 else len(buf)]).decode("utf-8", "replace")


def _parse_seq_block(buf: bytes, line0: int, path: str, spec: FormatSpec):
    """Whole lines ``buf`` (its first line is line ``line0`` of ``path``) -> (users, items,
    number of non-empty lines); users and items int64, one entry per item, in file order.
    Vectorised over bytes (no Python object per token); the first bad line of the block raises
    DataPrepError naming it."""
    a = np.frombuffer(buf, dtype=np.uint8)
    n = a.shape[0]
    ws = _WS[a]
    tok = ~ws
    if not tok.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    prev_ws = np.empty(n, dtype=bool)
    prev_ws[0] = True
    prev_ws[1:] = ws[:-1]
    next_ws = np.empty(n, dtype=bool)
    next_ws[-1] = True
    next_ws[:-1] = ws[1:]
    starts = np.flatnonzero(tok & prev_ws)
    ends = np.flatnonzero(tok & next_ws) + 1
    K = starts.shape[0]
    newlines = np.flatnonzero(a == 10)
    line_of = np.searchsorted(newlines, starts)          # 0-based line in the block per token
    first = np.empty(K, dtype=bool)                      # the user token of its line
    first[0] = True
    first[1:] = line_of[1:] != line_of[:-1]
    first_idx = np.flatnonzero(first)
    per_line = np.diff(np.append(first_idx, K))

    # bad tokens: a character other than a digit (a '-' may open a number), or too long
    digit = _DIGIT[a]
    minus_ok = (a == 45) & prev_ws & ~next_ws
    minus_ok[:-1] &= digit[1:]
    bad_char = tok & ~digit & ~minus_ok
    lengths = ends - starts
    neg = a[starts] == 45
    long_tok = np.flatnonzero(lengths - neg > _MAX_DIGITS)
    problems = []                                        # (line in block, token index, kind)
    if bad_char.any():
        j = int(np.searchsorted(starts, np.argmax(bad_char), side="right")) - 1
        problems.append((int(line_of[j]), j, "char"))
    if (per_line < 2).any():
        j = int(first_idx[np.argmax(per_line < 2)])
        problems.append((int(line_of[j]), j, "alone"))
    values_long = {}
    for j in long_tok.tolist():                          # rare: ids of 19+ digits
        v = int(buf[starts[j]:ends[j]]) if not bad_char[starts[j]:ends[j]].any() else None
        if v is None or not (-2**63 <= v < 2**63):
            problems.append((int(line_of[j]), j, "range"))
            break
        values_long[j] = v
    if problems:
        ln, j, kind = min(problems)
        text = _line_at(buf, int(starts[j]))
        v = buf[starts[j]:ends[j]].decode("utf-8", "replace")
        if kind == "alone":
            reason = (f"user {_snippet(v)} has no items (expected {spec.layout}): "
                      f"{_snippet(text)}")
        else:
            label = spec.labels[0] if first[j] else spec.labels[1]
            what = "is not an integer" if kind == "char" else "is out of the 64-bit integer range"
            reason = f"{label} {_snippet(v)} {what}: {_snippet(text)}"
        raise DataPrepError(reason, path, line0 + ln)

    # values: sum of digit * 10 ** (place from the right), per token, on token bytes only
    chars = a[tok].astype(np.int64)
    chars -= 48
    chars[chars < 0] = 0                                 # the '-' signs (validated above)
    cstart = np.zeros(K, dtype=np.int64)
    np.cumsum(lengths[:-1], out=cstart[1:])
    place = np.repeat(cstart + lengths - 1, lengths)
    place -= np.arange(place.shape[0], dtype=np.int64)
    np.minimum(place, 18, out=place)                     # long tokens are redone below
    chars *= _POW10[place]
    del place
    values = np.add.reduceat(chars, cstart)
    values[neg] *= -1
    for j, v in values_long.items():
        values[j] = v
    users = np.repeat(values[first_idx], per_line - 1)
    items = values[~first]
    return users, items, int(first_idx.shape[0])


def _read_seqlines(path: str, spec: FormatSpec):
    """-> (users, items, number of non-empty lines) of one seqlines file, in file order.

    Read in blocks of whole lines (about 4 MB each), so memory stays a few times the block
    plus the output arrays, whatever the file size."""
    if not os.path.exists(path):
        raise DataPrepError("no such file", path)
    if os.path.isdir(path):
        raise DataPrepError("is a folder, not a file", path)
    us, its = [], []
    line0, lines, pending = 1, 0, []
    try:
        with _open_binary(path) as f:
            head = True
            while True:
                chunk = f.read(_SEQ_BLOCK)
                if head:
                    if chunk.startswith(b"\xef\xbb\xbf"):
                        chunk = chunk[3:]
                    head = False
                if chunk:
                    cut = chunk.rfind(b"\n") + 1
                    if cut == 0:                        # no line end yet: keep reading
                        pending.append(chunk)
                        continue
                    buf = b"".join(pending + [chunk[:cut]])
                    pending = [chunk[cut:]]
                else:
                    buf = b"".join(pending)
                    pending = []
                if buf:
                    u, i, k = _parse_seq_block(buf, line0, path, spec)
                    us.append(u)
                    its.append(i)
                    lines += k
                    line0 += buf.count(b"\n")
                if not chunk:
                    break
    except (OSError, EOFError, zlib.error) as e:
        raise DataPrepError(f"cannot read: {e}", path) from None
    users = np.concatenate(us) if us else np.zeros(0, np.int64)
    items = np.concatenate(its) if its else np.zeros(0, np.int64)
    if items.shape[0] == 0:
        raise DataPrepError("no interactions (empty input)", path)
    return users, items, lines


def _merge_dict_columns(parts: list) -> Factorized:
    """(chunked dictionary column, dictionary) pairs -> one Factorized, no per-row objects."""
    chunks = []
    for col, _ in parts:
        chunks.extend(col.chunks)
    merged = pa.table({"x": pa.chunked_array(chunks, type=chunks[0].type)}).unify_dictionaries()
    col = merged.column("x")
    dictionary = col.chunk(0).dictionary
    codes = np.concatenate([np.asarray(c.indices.to_numpy(zero_copy_only=False), dtype=np.int32)
                            for c in col.chunks])
    return Factorized(codes, np.asarray(dictionary.to_pylist(), dtype=object))


def read_interactions(fmt: str, paths: Sequence[str], *, user_col: str = "user",
                      item_col: str = "item", time_col: str = "time", delimiter: str = ",",
                      log: Optional[Callable[[str], None]] = None,
                      ratings: bool = True) -> RawLog:
    """Read and concatenate the files (in the given order) of one format.

    ``seqlines`` has no times: an interaction's time is its running position over all the
    files (so a user's items keep file order, across lines and files); its ``rows_per_file``
    counts interactions (items), not lines. The MovieLens formats (``movielens``, ``ml100k``,
    ``movielens-csv``) have a rating column: ``RawLog.ratings`` holds it (float32, each one a
    finite number, else DataPrepError naming the line), unless ``ratings`` is False (the column
    is then neither read nor checked, as before ratings were kept); the other formats have none
    (``RawLog.ratings`` None)."""
    spec = format_spec(fmt, user_col, item_col, time_col, delimiter)
    if not ratings:
        spec = dataclasses.replace(spec, rating=None)
    if not paths:
        raise DataPrepError("no input files")
    t0 = _time.perf_counter()
    us, its, ts, rows, rs = [], [], [], [], []
    first_mode = None
    position = 0                      # seqlines: time = running position over all the files
    for path in paths:
        t1 = _time.perf_counter()
        if spec.time_kind == "position":
            u, i, lines = _read_seqlines(str(path), spec)
            n, mode = int(i.shape[0]), "int"
            t = np.arange(position, position + n, dtype=np.int64)
            position += n
            if log is not None:
                log(f"read {path}: {lines:,} lines, {n:,} interactions "
                    f"[{_time.perf_counter() - t1:.1f} s]")
            us.append(u)
            its.append(i)
            ts.append(t)
            rows.append(n)
            continue
        u, i, t, n, mode, r = _read_one(str(path), spec)
        rs.append(r)
        if first_mode is None:
            first_mode = (mode, path)
        elif (mode in ("int", "float")) != (first_mode[0] in ("int", "float")):
            kind = {True: "numeric", False: "ISO-8601"}
            raise DataPrepError(f"its times are {kind[mode in ('int', 'float')]} but those of "
                                f"{first_mode[1]} are {kind[first_mode[0] in ('int', 'float')]}",
                                str(path))
        us.append(u)
        its.append(i)
        ts.append(t)
        rows.append(n)
        if log is not None:
            log(f"read {path}: {n:,} rows [{_time.perf_counter() - t1:.1f} s]")
    if spec.id_kind == "int":
        users = np.concatenate(us) if len(us) > 1 else us[0]
        items = np.concatenate(its) if len(its) > 1 else its[0]
    else:
        users = _merge_dict_columns(us)
        items = _merge_dict_columns(its)
    del us, its
    if len(ts) > 1:
        kinds = {t.dtype.kind for t in ts}
        times = np.concatenate([t.astype(np.float64) for t in ts]) if len(kinds) > 1 \
            else np.concatenate(ts)
    else:
        times = ts[0]
    rated = None
    if rs and rs[0] is not None:
        rated = np.concatenate(rs) if len(rs) > 1 else rs[0]
    del rs
    return RawLog(users, items, times, rows, _time.perf_counter() - t0, rated)
