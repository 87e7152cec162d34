"""data_prep: raw interaction logs -> prepared dataset folders (numpy + pyarrow, no JAX).

CLI: ``python -m data_prep --format FORMAT --input PATH [PATH ...] --output DIR ...``.
Python API (the synthetic generator goes through the same pipeline)::

    s = settings_for("movielens", "paper", seed=1)
    prepared = build_dataset(user_keys, item_keys, times, s, source={"format": "synthetic"})
    write_dataset(prepared, "out/dir")
    prepared = load_dataset("out/dir")

See docs/data_prep.md and /work/shared/PROTOCOL.md sections 1-4.
"""
from .errors import DataPrepError
from .pipeline import (Factorized, PreparedData, build_dataset, make_candidates, split_sizes,
                       table1_line)
from .readers import FORMATS, read_interactions
from .settings import PROFILES, PROTOCOLS, Settings, settings_for
from .storage import load_dataset, write_dataset

__all__ = [
    "DataPrepError", "Factorized", "FORMATS", "PROFILES", "PROTOCOLS", "PreparedData",
    "Settings", "build_dataset", "load_dataset", "make_candidates", "read_interactions",
    "settings_for", "split_sizes", "table1_line", "write_dataset",
]
