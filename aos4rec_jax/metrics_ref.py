"""Reference implementation of the PROTOCOL section 5 metrics in plain Python (no JAX).

Written the straightforward way (sets, ``collections.Counter`` n-grams) to check
``aos4rec_jax.metrics`` and to score prediction files independently of any model code.

Items may be any hashable (raw ids are strings). ``None`` in ``generated`` is an empty slot: it
takes a position but matches nothing. ``None`` entries of ``target`` are padding and dropped
(``pad`` names another padding value, e.g. ``0`` for integer ids).

CLI::

    python -m aos4rec_jax.metrics_ref PATH/predictions/test.parquet [--json OUT]

prints ``{"sampled": {"prec@K": .., "ndcg@K": .., "bleu@K": .., "hr@K": .., "mrr@K": ..},
"full": {...}, "users": N}``: per-user means over users with a non-empty target, for the
``generated`` (sampled) and ``generated_full`` (full) columns; K = length of the generated lists.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import Counter

__all__ = ["compute", "summarize_predictions", "main"]

METRIC_NAMES = ("prec", "ndcg", "bleu", "hr", "mrr")
EPSILON = 0.1  # Chen & Cherry smoothing method 1
MAX_ORDER = 4


def _ngrams(seq, n):
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def _bleu(g, ref):
    k, m = len(g), len(ref)
    orders = min(MAX_ORDER, k)
    log_sum = 0.0
    for n in range(1, orders + 1):
        cand_counts = Counter(_ngrams(g, n))
        ref_counts = Counter(_ngrams(ref, n))
        clipped = sum(min(c, ref_counts[ng]) for ng, c in cand_counts.items())
        total = k - n + 1
        p = clipped / total if clipped > 0 else EPSILON / total
        log_sum += math.log(p)
    brevity = math.exp(1.0 - m / k) if k < m else 1.0
    return brevity * math.exp(log_sum / orders)


def compute(generated, target, pad=None) -> dict:
    """Metrics of one generated list against one target.

    Args:
      generated: list of K items (``None`` or ``pad`` = empty slot, never matches).
      target: list of the m target items (``None`` / ``pad`` entries are padding, dropped).
      pad: an extra padding value (e.g. ``0``).
    Returns:
      ``{"prec", "ndcg", "bleu", "hr", "mrr"}`` floats; all 0.0 when m = 0 (or K = 0).
    """
    empty = lambda x: x is None or (pad is not None and x == pad)  # noqa: E731
    ref = [t for t in target if not empty(t)]
    g = [None if empty(x) else x for x in generated]
    k, m = len(g), len(ref)
    if k == 0 or m == 0:
        return {name: 0.0 for name in METRIC_NAMES}
    ref_set = set(ref)

    hit_items = {x for x in g if x is not None} & ref_set
    prec = len(hit_items) / min(k, m)

    seen = set()
    dcg = 0.0
    for i, x in enumerate(g, start=1):
        if x is not None and x in ref_set and x not in seen:
            dcg += 1.0 / math.log2(i + 1)
        seen.add(x)
    idcg = sum(1.0 / math.log2(i + 1) for i in range(1, min(k, m) + 1))

    ranks = [i for i, x in enumerate(g, start=1) if x is not None and x in ref_set]
    hr = 1.0 if ranks else 0.0
    rr = 1.0 / ranks[0] if ranks else 0.0

    return {"prec": prec, "ndcg": dcg / idcg, "bleu": _bleu(g, ref), "hr": hr, "mrr": rr}


def _summarize_column(targets, lists):
    k = max((len(x) for x in lists), default=0)
    sums = {name: 0.0 for name in METRIC_NAMES}
    users = 0
    for tgt, gen in zip(targets, lists):
        tgt = [t for t in (tgt or []) if t is not None]
        if not tgt:
            continue
        users += 1
        for name, value in compute(list(gen or []), tgt).items():
            sums[name] += value
    return {f"{name}@{k}": (sums[name] / users if users else 0.0) for name in METRIC_NAMES}, users


class PredictionsError(ValueError):
    """A predictions file that cannot be scored; the message names the file."""


def summarize_predictions(path) -> dict:
    """Per-user means of every metric in a predictions parquet file.

    The file has columns ``user`` (string), ``target``, ``generated`` and ``generated_full``
    (lists of raw item id strings). Users whose target is empty are left out.

    Returns:
      ``{"sampled": {"prec@K": .., "ndcg@K": .., "bleu@K": .., "hr@K": .., "mrr@K": ..},
      "full": {...}, "users": N}``. A section is left out when its column is absent.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not os.path.isfile(path):
        raise PredictionsError(f"{path}: no such file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise PredictionsError(f"{path}: cannot read it as Parquet ({first})") from None
    for col in ("target",):
        if col not in table.column_names:
            raise PredictionsError(f"{path}: no column {col!r} (columns: {table.column_names}); "
                                   "expected a predictions file written by main.py")
    if not {"generated", "generated_full"} & set(table.column_names):
        raise PredictionsError(f"{path}: neither a 'generated' nor a 'generated_full' column "
                               f"(columns: {table.column_names})")
    targets = table.column("target").to_pylist()
    out = {}
    users = sum(1 for t in targets if any(x is not None for x in (t or [])))
    for section, column in (("sampled", "generated"), ("full", "generated_full")):
        if column in table.column_names:
            out[section], _ = _summarize_column(targets, table.column(column).to_pylist())
    out["users"] = users
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aos4rec_jax.metrics_ref",
        description="Score a predictions parquet file with the reference metrics (PROTOCOL 5).",
    )
    parser.add_argument("predictions", help="PATH/predictions/test.parquet")
    parser.add_argument("--json", dest="json_out", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    try:
        result = summarize_predictions(args.predictions)
    except PredictionsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2, sort_keys=False)
    print(text)
    if args.json_out:
        tmp = f"{args.json_out}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w") as f:
                f.write(text + "\n")
            os.replace(tmp, args.json_out)
        except OSError as e:
            print(f"error: --json {args.json_out}: {e.strerror}", file=sys.stderr)
            return 2
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
