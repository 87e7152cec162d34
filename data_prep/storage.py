"""Prepared dataset folder <-> PreparedData (layout: docs/DESIGN.md; written atomically)."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DataPrepError
from .pipeline import PreparedData
from .settings import SETTING_FIELDS, Settings

FILES = ("sequences.parquet", "splits.parquet", "candidates_valid.parquet",
         "candidates_test.parquet", "item_map.parquet", "protocol.json", "stats.json")


def _list_array(values: np.ndarray, offsets: np.ndarray, dtype=np.int32) -> pa.Array:
    values = pa.array(np.asarray(values, dtype=dtype), type=pa.from_numpy_dtype(dtype))
    if offsets[-1] <= np.iinfo(np.int32).max:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
    return pa.LargeListArray.from_arrays(pa.array(offsets.astype(np.int64)), values)


def _fixed_lists(mat: np.ndarray) -> pa.Array:
    U, C = mat.shape
    return _list_array(mat.reshape(-1), np.arange(U + 1, dtype=np.int64) * C)


def _json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def _looks_like_dataset(path: Path) -> bool:
    names = set(os.listdir(path))
    return not names or "protocol.json" in names or bool(names & set(FILES))


def check_output(out_dir, overwrite: bool) -> Path:
    """Refuse an existing output unless ``overwrite``; never replace a non-dataset folder."""
    out = Path(out_dir)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise DataPrepError(f"output {out} already exists (pass --overwrite / overwrite=True "
                                f"to replace it)")
        if not out.is_dir() or out.is_symlink():
            raise DataPrepError(f"output {out} exists and is not a folder; refusing to replace it")
        if not _looks_like_dataset(out):
            raise DataPrepError(f"output {out} exists and does not look like a prepared dataset "
                                f"(no protocol.json); refusing to replace it")
    parent = next((q for q in (out.parent, *out.parent.parents) if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise DataPrepError(f"the output's parent {parent} exists and is not a folder")
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # another user's live process
        return True
    return True


def remove_stale_temporaries(out: Path) -> list:
    """Removes the temporary folders of ``out`` left by data_prep processes that died (a kill
    while writing): ``.NAME.tmp-PID-*`` of a PID no longer alive. A ``.NAME.old-PID-*`` (the
    previous dataset, moved aside during a replacement) is removed only when ``out`` exists;
    otherwise it is the only copy and is left alone. Returns the removed paths."""
    removed = []
    if not out.parent.is_dir():
        return removed
    for name in os.listdir(out.parent):
        for kind in ("tmp", "old"):
            prefix = f".{out.name}.{kind}-"
            if not name.startswith(prefix):
                continue
            pid = name[len(prefix):].split("-")[0]
            if not pid.isdigit() or _alive(int(pid)) or (kind == "old" and not out.exists()):
                continue
            shutil.rmtree(out.parent / name, ignore_errors=True)
            removed.append(str(out.parent / name))
    return removed


def write_dataset(prepared: PreparedData, out_dir, overwrite: bool = False) -> Path:
    """Write the folder atomically: into a temporary folder beside ``out_dir``, then rename.

    An existing ``out_dir`` is refused unless ``overwrite`` (and even then only if it looks
    like a prepared dataset or is empty). On any error nothing is left behind.
    """
    out = check_output(out_dir, overwrite)
    p = prepared
    U = p.num_users
    out.parent.mkdir(parents=True, exist_ok=True)  # missing parents are made once the data parsed
    remove_stale_temporaries(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        users = pa.array(np.arange(U, dtype=np.int32))
        offsets = np.asarray(p.offsets, dtype=np.int64)
        columns = {
            "user": users,
            "raw_user": pa.array(np.asarray(p.raw_users).astype(str).tolist(), type=pa.string()),
            "items": _list_array(p.items_flat, offsets),
        }
        if p.ratings is not None:   # no column without ratings: the file is as it always was
            if np.shape(p.ratings) != np.shape(p.items_flat):
                raise DataPrepError(f"ratings has shape {np.shape(p.ratings)}, items_flat "
                                    f"{np.shape(p.items_flat)}: they must be aligned")
            columns["ratings"] = _list_array(p.ratings, offsets, np.float32)
        pq.write_table(pa.table(columns), tmp / "sequences.parquet")
        pq.write_table(pa.table({
            "user": users,
            "n_train": pa.array(np.asarray(p.n_train, dtype=np.int32)),
            "n_valid": pa.array(np.asarray(p.n_valid, dtype=np.int32)),
            "n_test": pa.array(np.asarray(p.n_test, dtype=np.int32)),
        }), tmp / "splits.parquet")
        for name, mat in (("candidates_valid", p.cand_valid), ("candidates_test", p.cand_test)):
            pq.write_table(pa.table({"user": users, "candidates": _fixed_lists(np.asarray(mat))}),
                           tmp / f"{name}.parquet")
        pq.write_table(pa.table({
            "item": pa.array(np.arange(1, p.num_items + 1, dtype=np.int32)),
            "raw_item": pa.array(np.asarray(p.item_raw[1:]).astype(str).tolist(), type=pa.string()),
        }), tmp / "item_map.parquet")
        (tmp / "protocol.json").write_text(_json(p.protocol_dict()))
        (tmp / "stats.json").write_text(_json(p.stats))
        trash = None
        if out.exists():
            check_output(out, overwrite)
            trash = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(out, trash)
        try:
            os.rename(tmp, out)
        except BaseException:
            if trash is not None:
                os.rename(trash, out)
            raise
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _list_column(table: pa.Table, name: str, dtype=np.int32) -> tuple[np.ndarray, np.ndarray]:
    col = table.column(name).combine_chunks()
    if isinstance(col, pa.ChunkedArray):  # pyarrow < 14 returns ChunkedArray for no chunks
        col = pa.concat_arrays(col.chunks) if col.num_chunks else pa.array([], col.type)
    offsets = np.asarray(col.offsets, dtype=np.int64)
    values = np.asarray(col.values.to_numpy(zero_copy_only=False), dtype=dtype)
    values = values[offsets[0]:offsets[-1]]
    return values, offsets - offsets[0]


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataPrepError(f"not a valid JSON file ({type(e).__name__}: {e}); the file is damaged "
                            "or truncated: prepare the folder again", path=str(path)) from None
    if not isinstance(obj, dict):
        raise DataPrepError("expected a JSON object", path=str(path))
    return obj


def _read_parquet(path: Path, columns: tuple, rows: int | None = None) -> pa.Table:
    """The file's table; DataPrepError naming the file when it cannot be read (truncated,
    damaged, not Parquet), lacks one of ``columns`` or has not ``rows`` rows."""
    try:
        t = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataPrepError(f"cannot read it as Parquet ({first[:160]}); the file is damaged or "
                            "truncated: prepare the folder again", path=str(path)) from None
    missing = [c for c in columns if c not in t.column_names]
    if missing:
        raise DataPrepError(f"has no column {missing[0]!r} (columns: {t.column_names})",
                            path=str(path))
    if rows is not None and t.num_rows != rows:
        raise DataPrepError(f"has {t.num_rows} rows, sequences.parquet has {rows} (the folder mixes "
                            "files of two preparations)", path=str(path))
    return t


def load_dataset(path) -> PreparedData:
    """Read a prepared dataset folder back into a PreparedData; DataPrepError naming the file if
    one is missing, damaged, truncated or inconsistent with the others."""
    d = Path(path)
    missing = [f for f in FILES if not (d / f).is_file()]
    if missing:
        raise DataPrepError(f"{d} is not a prepared dataset folder (missing {', '.join(missing)})")
    proto = _read_json(d / "protocol.json")
    stats = _read_json(d / "stats.json")
    try:
        settings = Settings(**{k: proto[k] for k in SETTING_FIELDS if k in proto})
    except (TypeError, ValueError) as e:
        raise DataPrepError(f"bad settings ({e})", path=str(d / "protocol.json")) from None
    source = {k: v for k, v in proto.items()
              if k not in SETTING_FIELDS and k not in ("num_items", "num_users")}
    seq = _read_parquet(d / "sequences.parquet", ("raw_user", "items"))
    items_flat, offsets = _list_column(seq, "items")
    ratings = None
    if "ratings" in seq.column_names:      # optional: folders prepared without ratings lack it
        ratings, r_offsets = _list_column(seq, "ratings", np.float32)
        if not np.array_equal(r_offsets, offsets):
            raise DataPrepError("the ratings lists are not aligned with the items lists",
                                path=str(d / "sequences.parquet"))
        if not np.all(np.isfinite(ratings)):
            raise DataPrepError("ratings holds NaN or infinity (the file was not written by "
                                "data_prep, or was edited): prepare the folder again",
                                path=str(d / "sequences.parquet"))
    elif proto.get("ratings"):
        raise DataPrepError('has no column \'ratings\' but protocol.json says "ratings": true '
                            "(the folder mixes files of two preparations)",
                            path=str(d / "sequences.parquet"))
    raw_users = np.asarray(seq.column("raw_user").to_pylist(), dtype=str)
    U = seq.num_rows
    spl = _read_parquet(d / "splits.parquet", ("n_train", "n_valid", "n_test"), U)
    cands = []
    for name in ("candidates_valid", "candidates_test"):
        t = _read_parquet(d / f"{name}.parquet", ("candidates",), U)
        vals, offs = _list_column(t, "candidates")
        C = int(offs[1] - offs[0]) if U else settings.num_candidates
        if len(vals) != U * C:
            raise DataPrepError("candidate lists of unequal lengths", path=str(d / f"{name}.parquet"))
        cands.append(vals.reshape(U, C))
    imap = _read_parquet(d / "item_map.parquet", ("item", "raw_item"))
    item_ids = imap.column("item").to_numpy()
    raw_items = imap.column("raw_item").to_pylist()
    item_raw = [""] * (len(raw_items) + 1)
    try:
        for k, r in zip(item_ids.tolist(), raw_items):
            item_raw[k] = r
    except IndexError:
        raise DataPrepError("item ids are not 1..N", path=str(d / "item_map.parquet")) from None
    if len(items_flat) and (items_flat.min() < 1 or items_flat.max() > len(raw_items)):
        raise DataPrepError(f"item ids outside 1..{len(raw_items)} (item_map.parquet has "
                            f"{len(raw_items)} items)", path=str(d / "sequences.parquet"))
    return PreparedData(
        raw_users=raw_users,
        item_raw=np.asarray(item_raw, dtype=str),
        items_flat=items_flat,
        offsets=offsets,
        n_train=spl.column("n_train").to_numpy().astype(np.int32),
        n_valid=spl.column("n_valid").to_numpy().astype(np.int32),
        n_test=spl.column("n_test").to_numpy().astype(np.int32),
        cand_valid=cands[0],
        cand_test=cands[1],
        settings=settings,
        stats=stats,
        source=source,
        ratings=ratings,
    )
