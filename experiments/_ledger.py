"""A table driver's per-run ledger: OUT/NAME_runs.csv, one row a run (the run's key, e.g. model,
dataset, seed; its figures; a few text fields such as K; the date they were recorded; the
command). It keeps every result a table has seen, so run folders may be deleted, or lost with a
machine, without losing the table.

Who calls whom: a driver (next_item_table.py, table3.py) opens `Ledger(path, keys, figures,
texts)`, and for every run of its selection calls `take(key, row, cmd)` with the figures of a
finished run folder (the ledger takes it, or is corrected from it, and is written at once when
the run was trained now), or `lookup(key, cmd)` when there is no finished folder: the ledger's row
when the ledger's command has the same config and overrides as `cmd` (the run folder and data
root may differ), else None (the driver runs it again). `write()` at the end. The ledger is only
ever added to or corrected from a run folder; rows outside the driver's selection are kept.
"""
from __future__ import annotations

import csv
import os
import shlex
import time

from experiments import _runs


def config_part(command: str) -> tuple:
    """What decides a run's result in its command: the config file and the value each override
    ends with (a key set twice counts once, at its last value), without the run folder and the
    data root (which differ from machine to machine; the dataset is in the ledger's key)."""
    parts = shlex.split(command)
    parts = parts[parts.index('main.py') + 1:] if 'main.py' in parts else parts
    config = next((p for p in reversed(parts) if p.startswith('--config=')), None)
    sets = {f'--config.{k}': v for k, v in _runs.config_sets(parts).items() if k != 'data_dir'}
    return config, tuple(sorted(sets.items()))


class Ledger:
    """keys: the columns naming a run (the last one the seed, an integer); figures: the float
    columns; texts: other columns a table needs (may be empty strings)."""

    def __init__(self, path: str, keys, figures, texts=()):
        self.path, self.keys, self.figures, self.texts = path, tuple(keys), tuple(figures), tuple(texts)
        self.fields = self.keys + self.figures + self.texts + ('recorded', 'command')
        self.rows = self._read()

    def _read(self) -> dict:
        """{key tuple: row}; {} when there is no ledger yet. A malformed row stops the driver with
        one line naming the file and line."""
        if not os.path.exists(self.path):
            return {}
        out = {}
        with open(self.path, newline='') as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != self.fields:
                raise SystemExit(f'{self.path}: line 1: the columns must be {",".join(self.fields)}')
            for row in reader:
                try:
                    key = self.key_of(row)
                    for field in self.figures:
                        float(row[field])
                    config_part(row['command'])
                except (TypeError, ValueError) as e:
                    raise SystemExit(f'{self.path}: line {reader.line_num}: not a ledger row ({e})') from None
                out[key] = row
        return out

    def key_of(self, row) -> tuple:
        return tuple(row[k] for k in self.keys[:-1]) + (int(row[self.keys[-1]]),)

    def lookup(self, key: tuple, cmd: list[str]):
        """The ledger's row for a run with no finished folder, when its command matches `cmd`;
        None otherwise (said, when the ledger has the run under another command)."""
        row = self.rows.get(key)
        if row is None:
            return None
        if config_part(row['command']) == config_part(_runs.shown(cmd, quote=True)):
            return row
        print(f'ledger: {" x ".join(map(str, key[:-1]))} seed {key[-1]} was made by another command '
              f'({row["command"]}); not used', flush=True)
        return None

    def take(self, key: tuple, values: dict, cmd: list[str], trained: bool, workdir: str = '') -> None:
        """A finished run folder's figures and texts (`values`): recorded when new or trained
        now, corrected (and said) when they differ from the ledger's; written at once when the
        run was trained now, so a later failure loses nothing."""
        new = {k: str(v) for k, v in zip(self.keys, key)}
        for field in self.figures:
            new[field] = repr(float(values[field]))
        for field in self.texts:
            new[field] = str(values.get(field, ''))
        new['recorded'] = time.strftime('%Y-%m-%d')
        new['command'] = _runs.shown(cmd, quote=True)
        old = self.rows.get(key)
        changed = old is None or any(float(old[f]) != float(new[f]) for f in self.figures) or any(
            old[f] != new[f] for f in self.texts)
        if trained or changed:
            if old is not None and not trained:
                print(f'ledger: {" x ".join(map(str, key[:-1]))} seed {key[-1]} corrected from {workdir}',
                      flush=True)
            self.rows[key] = new
        if trained:
            self.write()

    def write(self) -> None:
        _runs.write_csv(self.path, self.fields, [self.rows[k] for k in sorted(self.rows)])
