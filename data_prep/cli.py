"""``python -m data_prep``: raw interaction logs -> a prepared dataset folder."""
from __future__ import annotations

import argparse
import os
import sys
import time as _time
from pathlib import Path

from .errors import DataPrepError
from .pipeline import build_dataset, table1_line
from .readers import FORMATS, format_spec, read_interactions
from .settings import PROFILES, PROTOCOLS, candidates_for_negatives, settings_for
from .storage import check_output, write_dataset

DEFAULT_PROFILE = {"movielens": "movielens", "movielens-csv": "movielens", "ml100k": "movielens",
                   "yoochoose": "yoochoose", "session-tsv": "yoochoose", "csv": "default",
                   "seqlines": "default"}
EXIT_BAD_INPUT = 2
RATED_FORMATS = tuple(f for f in FORMATS if format_spec(f).rating is not None)  # MovieLens ones


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's own code for usage errors)
        sys.stderr.write(f"data_prep: error: {message} (see python -m data_prep --help)\n")
        sys.exit(EXIT_BAD_INPUT)


def _max_len(v: str):
    if v.lower() in ("none", "inf"):
        return "none"
    try:
        return int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {v!r}") from None


def _delimiter(v: str) -> str:
    return {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(v, v)


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m data_prep",
        description="Turn a raw interaction log into a prepared dataset folder "
                    "(PROTOCOL sections 1-4; see docs/data_prep.md).")
    p.add_argument("--format", required=True, choices=FORMATS, help="input format")
    p.add_argument("--input", required=True, nargs="+", metavar="PATH",
                   help="input file(s), concatenated in this order; .gz is read directly "
                        "(seqlines: one user a line, 'user item item ...', no times)")
    p.add_argument("--output", required=True, metavar="DIR", help="output dataset folder")
    p.add_argument("--profile", choices=PROFILES, default=None,
                   help="settings profile (default: movielens for movielens/movielens-csv/ml100k, "
                        "yoochoose for yoochoose/session-tsv, default for csv/seqlines)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="paper",
                   help="paper: h = min(ceil(0.2 n), cap), 1000 candidates; loo: leave-one-out, "
                        "h = 1, T = 1, 101 candidates (the target + --num-negatives 100)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output folder (only one that holds a dataset)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--ratings", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the rating of every interaction (a 'ratings' column of "
                        "sequences.parquet; default: yes for the formats with a rating column, "
                        "movielens, movielens-csv, ml100k); --no-ratings reads the file without "
                        "them, as before they were kept")
    g = p.add_argument_group("overrides of the profile's settings")
    g.add_argument("--k-core", type=int, help="k of the iterative k-core")
    g.add_argument("--min-len", type=int, help="minimum sequence length after the k-core")
    g.add_argument("--max-len", type=_max_len, help="maximum sequence length ('none': no maximum)")
    g.add_argument("--cap", type=int, help="cap C of the split size h = min(ceil(0.2 n), C)")
    g.add_argument("--k", type=int, help="length K of generated lists")
    g.add_argument("--target-len", type=int, help="target length T")
    g.add_argument("--history-len", type=int, help="history length L")
    g.add_argument("--num-candidates", type=int, help="candidates per user and evaluated part")
    g.add_argument("--num-negatives", type=int, metavar="N",
                   help="--protocol loo only: N sampled never-seen negatives per user (fixed, "
                        "stored), i.e. --num-candidates N+1 (default 100 as SASRec; 99 for "
                        "the S3-Rec figures)")
    g.add_argument("--seed", type=int, help="seed of the candidate sampling")
    g.add_argument("--ban-history", action=argparse.BooleanOptionalAction, default=None,
                   help="ban history items from generated lists (recorded in protocol.json)")
    c = p.add_argument_group("generic CSV (--format csv only)")
    c.add_argument("--user-col", help="user column name (default: user)")
    c.add_argument("--item-col", help="item column name (default: item)")
    c.add_argument("--time-col", help="time column name (default: time); numbers or ISO-8601")
    c.add_argument("--delimiter", type=_delimiter,
                   help="field delimiter (default ','; 'tab' or '\\t' for a tab)")
    return p


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    quiet = args.quiet

    def log(msg: str):
        if not quiet:
            sys.stderr.write(f"[data_prep {_time.perf_counter() - t_start:7.1f}s] {msg}\n")
            sys.stderr.flush()

    t_start = _time.perf_counter()
    try:
        csv_only = {k: getattr(args, k) for k in ("user_col", "item_col", "time_col", "delimiter")}
        if args.format != "csv":
            given = [f"--{k.replace('_', '-')}" for k, v in csv_only.items() if v is not None]
            if given:
                raise DataPrepError(f"{', '.join(given)} only apply to --format csv")
        if args.ratings and args.format not in RATED_FORMATS:
            raise DataPrepError(f"--ratings: --format {args.format} has no rating column (only "
                                f"{', '.join(RATED_FORMATS)} have one)")
        profile = args.profile or DEFAULT_PROFILE[args.format]
        num_candidates = candidates_for_negatives(
            args.protocol, args.num_negatives, args.num_candidates,
            names=("--num-negatives", "--num-candidates", "--protocol "))
        settings = settings_for(
            profile, args.protocol, k_core=args.k_core, min_len=args.min_len,
            max_len=args.max_len, cap=args.cap, k=args.k, target_len=args.target_len,
            history_len=args.history_len, num_candidates=num_candidates, seed=args.seed,
            ban_history=args.ban_history)
        out = check_output(args.output, args.overwrite)
        log(f"format {args.format}, profile {profile}, protocol {args.protocol}: {settings}")
        raw = read_interactions(
            args.format, args.input, log=log,
            user_col=csv_only["user_col"] or "user", item_col=csv_only["item_col"] or "item",
            time_col=csv_only["time_col"] or "time", delimiter=csv_only["delimiter"] or ",",
            ratings=args.ratings is not False)
        source = {"format": args.format, "inputs": [os.path.abspath(p) for p in args.input]}
        if settings.protocol == "loo":  # the target + N negatives (recorded, not a setting)
            source["num_negatives"] = settings.num_candidates - 1
        prepared = build_dataset(raw.users, raw.items, raw.times, settings, source, log=log,
                                 ratings=raw.ratings)
        st = prepared.stats
        if prepared.ratings is not None:
            log(f"ratings kept: {st['rating_min']:g}..{st['rating_max']:g}, mean "
                f"{st['rating_mean']:.3f} (the 'ratings' column of sequences.parquet)")
        st["rows_per_file"] = [int(n) for n in raw.rows_per_file]
        st["stage_seconds"] = {"read": round(raw.seconds, 3), **st["stage_seconds"]}
        st["elapsed_seconds"] = round(_time.perf_counter() - t_start, 3)  # all but the write
        del raw
        t_w = _time.perf_counter()
        write_dataset(prepared, out, overwrite=args.overwrite)
        log(f"wrote {out} [{_time.perf_counter() - t_w:.1f} s]; total "
            f"{_time.perf_counter() - t_start:.1f} s")
    except DataPrepError as e:
        sys.stderr.write(f"data_prep: error: {e}\n")
        return EXIT_BAD_INPUT
    except MemoryError:
        sys.stderr.write("data_prep: error: out of memory\n")
        return EXIT_BAD_INPUT
    except OSError as e:
        sys.stderr.write(f"data_prep: error: {e}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("data_prep: interrupted\n")
        return 130
    print(table1_line(Path(args.output).name, prepared.stats))
    return 0
