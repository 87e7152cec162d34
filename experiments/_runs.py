"""Helpers shared by the table drivers (next_item_table.py, table3.py, strategies_table.py,
oracle_nll_table.py): command building and printing, skipping finished runs, mean ± std, and
Markdown / CSV files written through a temporary file and os.replace.

A run is finished when its metrics file exists (`metrics/test.json`, or `metrics/test_TAG.json`
for a re-evaluation with `python -m aos4rec_jax.evaluate --tag TAG`): main.py and evaluate.py
write it last, so a killed run leaves none and its command, run again, resumes it. A finished
folder whose config.json disagrees with the command's `--config.KEY=VALUE` overrides (the driver
was run again with another --set) is not the command's result: `read_result(..., cmd=...)` says
so in one line and returns None, so the command runs on the folder (main.py extends a run whose
change it can resume, e.g. more train_steps, and moves the old final figures aside; it refuses
any other change, naming the field) or, with --collect-only, the cell is left out.
"""
from __future__ import annotations

import ast
import csv
import io
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- commands

def config_path(name: str) -> str:
    """experiments/configs/NAME.py (NAME without a variant)."""
    return os.path.join(ROOT, 'experiments', 'configs', name.split(':')[0] + '.py')


def config_exists(name: str) -> bool:
    return os.path.exists(config_path(name))


def main_command(config: str, variant: str, workdir: str, sets) -> list[str]:
    """`python main.py --config=experiments/configs/CONFIG.py[:VARIANT] --workdir=W --config.K=V...`
    (cwd: the repository root); `sets`: (key, value) pairs in order."""
    return ([sys.executable, 'main.py',
             f'--config=experiments/configs/{config}.py' + (f':{variant}' if variant else ''),
             f'--workdir={workdir}']
            + [f'--config.{k}={v}' for k, v in sets])


def evaluate_command(workdir: str, tag: str, args) -> list[str]:
    """`python -m aos4rec_jax.evaluate --workdir=W --tag=TAG ARGS...`: writes metrics/test_TAG.json."""
    return [sys.executable, '-m', 'aos4rec_jax.evaluate', f'--workdir={workdir}', f'--tag={tag}'] + list(args)


def workdir_of(cmd: list[str]) -> str:
    return next(c for c in cmd if c.startswith('--workdir=')).split('=', 1)[1]


def shown(cmd: list[str], quote: bool = False) -> str:
    """The command as a person types it: 'python' for the interpreter; `quote`: shell-quoted."""
    parts = ['python'] + cmd[1:]
    return shlex.join(parts) if quote else ' '.join(parts)


def parse_sets(items, error, forbid_star_steps: bool = True) -> dict[str, list]:
    """--set TARGET:KEY=VALUE strings -> {TARGET: [(key, value), ...]} in the given order.
    TARGET is ROW, ROW@DATASET or * (every row); a ROW may name a variant (sasrec:s3rec): the
    TARGET ends at the last ':' before the '='. `error` is argparse's ap.error."""
    overrides: dict[str, list] = {}
    for s in items:
        if forbid_star_steps and s.startswith('*:') and 'train_steps' in s:
            error('--set *:train_steps would train PopRec: use --steps')
        eq = s.find('=')
        cut = s.rfind(':', 0, eq) if eq > 0 else -1
        target, key, value = s[:cut], s[cut + 1:eq], s[eq + 1:]
        if cut <= 0 or not key:
            error(f'--set {s!r}: expected MODEL[@DATASET]:KEY=VALUE')
        overrides.setdefault(target, []).append((key, value))
    return overrides


def overrides_for(overrides: dict, row: str, dataset: str) -> list:
    """The --set pairs of `row` on `dataset`: those of *, then ROW, then ROW@DATASET."""
    return overrides.get('*', []) + overrides.get(row, []) + overrides.get(f'{row}@{dataset}', [])


# ----------------------------------------------------------------------------- running

def config_sets(parts) -> dict:
    """{KEY: VALUE} of a main.py command's `--config.KEY=VALUE` parts, each key at the last value
    it is set to (as ml_collections applies them). A bare `--config.KEY` (absl's True for a bool
    field) gives KEY: '' (the ledger keeps it as written; config_mismatch leaves it out)."""
    sets = {}
    for p in parts:
        if p.startswith('--config.'):
            key, _, value = p[len('--config.'):].partition('=')
            sets[key] = value
    return sets


def _flat(d: dict, prefix: str = '') -> dict:
    """config.json's nested dict as {'a.b': value} (trainer._flatten's twin: the drivers do not
    import jax)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


def _same_value(value, text: str) -> bool:
    """Whether config.json's `value` is what the flag text `text` sets (as ml_collections parses
    it: by the field's type)."""
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        parsed = text
    if isinstance(value, bool) or isinstance(parsed, bool):
        return str(value).lower() == str(parsed).lower()
    if isinstance(value, (int, float)) and isinstance(parsed, (int, float)):
        return float(value) == float(parsed)
    if isinstance(value, (list, tuple)) and isinstance(parsed, (list, tuple)):
        return list(value) == list(parsed)
    return str(value) == str(parsed)


def config_mismatch(workdir: str, cmd: list[str]) -> str | None:
    """The first `--config.KEY=VALUE` of a main.py command that the run folder's config.json
    does not hold ('KEY: X in the folder, Y in the command'); None when they agree, when the
    folder has no config.json, or for a key the folder's config lacks (a field added later)."""
    path = os.path.join(workdir, 'config.json')
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            flat = _flat(json.load(f))
    except (OSError, ValueError):
        return None
    # only KEY=VALUE parts: a bare `--config.KEY` (absl's True for a bool field) is not compared
    for key, text in config_sets(p for p in cmd if '=' in p).items():
        if key == 'data_dir' or key not in flat:
            continue
        if not _same_value(flat[key], text):
            return f'{key}: {flat[key]!r} in the folder, {text} in the command'
    return None


_SAID_STALE: set = set()


def read_result(workdir: str, tag: str = '', cmd: list[str] | None = None):
    """metrics/test.json (or test_TAG.json) of a run as a dict; None while it is not finished,
    and (said once) when `cmd`, the main.py command of the run, sets a config value the
    folder's run did not have (`config_mismatch`)."""
    path = os.path.join(workdir, 'metrics', f'test_{tag}.json' if tag else 'test.json')
    if not os.path.exists(path):
        return None
    why = config_mismatch(workdir, cmd) if cmd else None
    if why:
        if workdir not in _SAID_STALE:
            _SAID_STALE.add(workdir)
            print(f'{workdir}: finished under another config ({why}); not this command\'s '
                  'result (the command runs on it unless --collect-only)', flush=True)
        return None
    with open(path) as f:
        return json.load(f)


def announce(cmd: list[str], quote: bool = False, stamp: bool = True) -> None:
    print((f'[{time.strftime("%H:%M:%S")}] ' if stamp else '') + shown(cmd, quote), flush=True)


def run_logged(cmd: list[str], workdir: str, log_name: str = 'run.log', record: str | None = None,
               quote: bool = False, graceful: bool = False) -> int:
    """Runs `cmd` from the repository root, its output appended to WORKDIR/LOG_NAME; prints the
    failure. `record`: a file that gets one line per command started and one per exit status.

    `graceful` (the new drivers): a Ctrl-C (which the run receives too) or a SIGTERM to this
    process (forwarded to the run) waits for the run to save its state and exit (main.py: 130 /
    143), then stops the driver with that status instead of starting the next run. Without it,
    subprocess.call kills the run on Ctrl-C; its last checkpoint still resumes."""
    os.makedirs(workdir, exist_ok=True)
    if record:
        _append(record, f'{time.strftime("%Y-%m-%d %H:%M:%S")} start {shown(cmd, True)}')
    log_path = os.path.join(workdir, log_name)
    with open(log_path, 'a') as log:
        if graceful:
            rc = _wait_gracefully(cmd, log)
        else:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if record:
        _append(record, f'{time.strftime("%Y-%m-%d %H:%M:%S")} exit {rc} {workdir}')
    if graceful and stop_status(rc):
        print(f'  interrupted (exit {rc}): the same command resumes it; see {log_path}', flush=True)
        raise SystemExit(stop_status(rc))
    if rc:
        print(f'  failed (exit {rc}): see {log_path}', flush=True)
    return rc


def stop_status(rc: int):
    """The driver's exit status when a run ended by Ctrl-C (130) or SIGTERM (143), whether it
    saved and exited with that status or was killed by the signal; None for any other end."""
    if rc in (130, -signal.SIGINT):
        return 130
    if rc in (143, -signal.SIGTERM):
        return 143
    return None


def _wait_gracefully(cmd, log) -> int:
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    old = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signal.SIGTERM))
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:     # the terminal's SIGINT reached the run too: let it save
                print('  Ctrl-C: waiting for the run to save its state and stop', flush=True)
    finally:
        signal.signal(signal.SIGTERM, old)


def _append(path: str, line: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'a') as f:
        f.write(line + '\n')


def ensure_run(cmd: list[str], done, args, record: str | None = None, quote: bool = True,
               log_name: str = 'run.log'):
    """The result of a run, running it first when it is not finished (`done()` returns None) and
    neither --collect-only nor --dry-run is set; --dry-run prints the command only."""
    res = done()
    if res is not None or args.collect_only:
        return res
    if args.dry_run:
        print(shown(cmd, quote), flush=True)
        return None
    workdir = workdir_of(cmd)
    if defer(args, cmd, done, record=record, quote=quote, log_name=log_name) or attempted(args, workdir):
        return None
    announce(cmd, quote)
    rc = run_logged(cmd, workdir, log_name=log_name, record=record, quote=quote, graceful=True)
    res = done()
    if rc or res is None:
        note_failure(args, os.path.join(workdir, log_name))
    return res


# ----------------------------------------------------------------------------- --workers
def add_workers_arg(ap) -> None:
    ap.add_argument('--workers', type=int, default=1, metavar='N',
                    help='runs at once (default 1). N > 1: the missing runs are found first, then '
                         'run N at a time, each with one XLA intra-op thread (for a many-core '
                         'CPU; on one GPU keep 1), then the tables are collected')


def start_deferring(args) -> bool:
    """Before a driver's first pass: with --workers > 1 (and runs to make), `ensure_run` and
    `defer` queue the missing runs instead of running them (`run_deferred` runs the queue)."""
    if getattr(args, 'workers', 1) > 1 and not (args.dry_run or args.collect_only):
        args.defer_runs = []
        return True
    return False


def defer(args, cmd, done, record=None, quote: bool = True, log_name: str = 'run.log') -> bool:
    """Queues `cmd` (True) in a driver's first pass under --workers; False otherwise."""
    queue = getattr(args, 'defer_runs', None)
    if queue is None:
        return False
    if workdir_of(cmd) not in {workdir_of(c) for c, *_ in queue}:
        queue.append((cmd, done, record, quote, log_name))
    return True


def attempted(args, workdir: str) -> bool:
    """The run of `workdir` was made by `run_deferred` (finished or failed): not run again."""
    return workdir in getattr(args, 'attempted_runs', ())


def _parallel_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED='1', XLA_PYTHON_CLIENT_PREALLOCATE='false')
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen=false '
                        'intra_op_parallelism_threads=1').strip()
    return env


def run_deferred(args, poll_s: float = 1.0) -> None:
    """Runs the queued runs `args.workers` at a time (each from the repository root, its output
    appended to WORKDIR/run.log, started and ended in the driver's record), one line as each
    starts and ends; a failed run (exit status or no result) is noted (`failure_status`). Ctrl-C
    (which the runs receive too) or a SIGTERM (forwarded to every run) starts nothing more,
    waits for the running ones to save and stop, then stops the driver (exit 130 / 143); the
    same command resumes them."""
    queue, args.defer_runs = list(getattr(args, 'defer_runs', None) or []), None
    args.attempted_runs = set(getattr(args, 'attempted_runs', ()))
    workers, env, total = max(1, int(args.workers)), _parallel_env(), len(queue)
    running, stop, t0 = [], [], time.time()

    def forward(signum, frame):
        stop.append(143)
        for job in running:
            job[0].send_signal(signal.SIGTERM)

    old = signal.signal(signal.SIGTERM, forward)
    try:
        while running or (queue and not stop):
            while queue and len(running) < workers and not stop:
                cmd, done, record, quote, log_name = queue.pop(0)
                workdir = workdir_of(cmd)
                os.makedirs(workdir, exist_ok=True)
                if record:
                    _append(record, f'{time.strftime("%Y-%m-%d %H:%M:%S")} start {shown(cmd, True)}')
                print(f'[{time.strftime("%H:%M:%S")}] start ({total - len(queue)}/{total}) '
                      + shown(cmd, quote), flush=True)
                log = open(os.path.join(workdir, log_name), 'a')
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
                running.append((proc, log, cmd, done, record, log_name, time.time()))
            try:
                time.sleep(poll_s)
            except KeyboardInterrupt:          # the terminal's SIGINT reached the runs too
                print('  Ctrl-C: waiting for the running runs to save their state and stop', flush=True)
                stop.append(130)
            for job in [j for j in running if j[0].poll() is not None]:
                running.remove(job)
                proc, log, cmd, done, record, log_name, t_start = job
                log.close()
                rc, workdir = proc.returncode, workdir_of(cmd)
                if record:
                    _append(record, f'{time.strftime("%Y-%m-%d %H:%M:%S")} exit {rc} {workdir}')
                args.attempted_runs.add(workdir)
                log_path = os.path.join(workdir, log_name)
                if stop_status(rc):
                    print(f'  interrupted (exit {rc}): the same command resumes it; see {log_path}',
                          flush=True)
                    stop.append(stop_status(rc))
                    continue
                ok = rc == 0 and done() is not None
                if not ok:
                    note_failure(args, log_path)
                print(f'[{time.strftime("%H:%M:%S")}] {"done  " if ok else "failed"} {workdir} '
                      f'({time.time() - t_start:.0f} s' + ('' if ok else f', exit {rc}; see {log_path}')
                      + f'; {total - len(queue) - len(running)}/{total} ended, '
                      f'{(time.time() - t0) / 60:.1f} min)', flush=True)
    finally:
        signal.signal(signal.SIGTERM, old)
    if stop:
        raise SystemExit(stop[0])


def note_failure(args, log_path: str) -> None:
    """Records a run that failed (or ended without its result) on the driver's parsed `args`;
    `failure_status` names them all at the end."""
    failed = args.__dict__.setdefault('failed_runs', [])
    if log_path not in failed:
        failed.append(log_path)


def failure_status(args, what: str = 'their results are left out') -> int:
    """The driver's exit status: 1, after one line naming every failed run's log, if a run
    failed; else 0. Called after the tables are written, so the finished runs are kept."""
    failed = getattr(args, 'failed_runs', [])
    if not failed:
        return 0
    print(f'{len(failed)} run(s) failed, {what}: ' + ', '.join(failed), flush=True)
    return 1


# ----------------------------------------------------------------------------- numbers

def mean_std(vals):
    """(mean, sample std) of a list; '' where undefined (no value; one value for the std)."""
    return (statistics.fmean(vals) if vals else '', statistics.stdev(vals) if len(vals) > 1 else '')


def fmt(vals, digits: int = 4):
    return fmt_mean_std(*mean_std(vals), digits)


def fmt_mean_std(mean, std, digits: int = 4) -> str:
    """'m ± s', 'm' without a std, 'n/a' without a mean ('' as mean_std gives them)."""
    if mean == '':
        return 'n/a'
    return f'{mean:.{digits}f} ± {std:.{digits}f}' if std != '' else f'{mean:.{digits}f}'


def ratio_text(ours, ref, digits: int = 2) -> str:
    """' (0.93x)': our mean / the published figure; '' when either is missing."""
    return f' ({ours / ref:.{digits}f}x)' if ours != '' and ours is not None and ref else ''


def ranks(values) -> list[float]:
    """Ranks 1..n of values in ascending order, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a, b):
    """Spearman's rank correlation of two equally long lists (Pearson's r of their ranks, ties
    at mean rank); None with fewer than 2 values or a constant list."""
    if len(a) != len(b) or len(a) < 2:
        return None
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    sab = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    saa = sum((x - ma) ** 2 for x in ra)
    sbb = sum((y - mb) ** 2 for y in rb)
    if not saa or not sbb:
        return None
    return sab / (saa * sbb) ** 0.5


def inverted_pairs(names, ours, ref):
    """Pairs (a, b) that the reference orders a > b and we order a < b (ties in either: not
    inverted), the reference's higher one first, in the reference's order."""
    idx = sorted(range(len(names)), key=lambda i: -ref[i])
    out = []
    for x in range(len(idx)):
        for y in range(x + 1, len(idx)):
            i, j = idx[x], idx[y]
            if ref[i] > ref[j] and ours[i] < ours[j]:
                out.append((names[i], names[j]))
    return out


# ----------------------------------------------------------------------------- files

def write_atomic(path: str, text: str) -> None:
    """Writes `text` to PATH.tmp, then renames it over PATH (readers never see half a file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w', newline='') as f:
        f.write(text)
    os.replace(tmp, path)


def csv_text(fields, rows) -> str:
    buf = io.StringIO(newline='')
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction='ignore')
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_csv(path: str, fields, rows) -> None:
    write_atomic(path, csv_text(fields, rows))


def write_markdown(out_dir: str, name: str, text: str, num_rows: int) -> None:
    """A driver's last step: OUT/NAME.md (atomically), then the line naming it and NAME.csv
    (written before it by write_csv)."""
    write_atomic(os.path.join(out_dir, f'{name}.md'), text)
    print(f'wrote {out_dir}/{name}.md and {name}.csv ({num_rows} rows)')


def made_by(module: str, argv) -> str:
    """'python -m MODULE ARGS' as a person types it (arguments shell-quoted), with a `--set V` that
    is given again later dropped: overrides apply in order, so only the last of identical ones
    counts (a command assembled from earlier tables' commands plus new sets stays readable).
    `--workers N` (how many runs at once; no figure depends on it) is left out."""
    argv = list(argv)
    pairs = [(i, argv[i + 1]) for i in range(len(argv) - 1) if argv[i] == '--set']
    later = {v: i for i, v in pairs}                         # the last place of each value
    drop = {j for i, v in pairs if later[v] != i for j in (i, i + 1)}
    drop |= {j for i, a in enumerate(argv) if a == '--workers' for j in (i, i + 1)}
    drop |= {i for i, a in enumerate(argv) if a.startswith('--workers=')}
    return shlex.join(['python', '-m', module] + [a for j, a in enumerate(argv) if j not in drop])


def add_output_args(ap, missing: str = 'runs') -> None:
    """The flags every driver shares: --out-dir (docs/results), --collect-only, --dry-run,
    --replace."""
    ap.add_argument('--out-dir', default=os.path.join(ROOT, 'docs', 'results'))
    ap.add_argument('--collect-only', action='store_true', help='write the tables from finished runs only')
    ap.add_argument('--dry-run', action='store_true', help=f'print the commands of the missing {missing}, run nothing')
    ap.add_argument('--replace', action='store_true',
                    help='write the table even where it drops results the table already in --out-dir '
                         'holds (this command selects fewer rows, datasets or seeds)')


def refuse_narrowing(args, name: str, key_fields, selected, num_seeds: int, error) -> None:
    """Before any run: a driver asked for a subset (a few rows, one dataset, one seed) would
    replace OUT/NAME.{csv,md} by a table of that subset, and the results of the full table
    would be gone from it. Unless --replace (or --dry-run, which writes nothing), `error` gets one
    line naming the file and the rows it would lose.

    key_fields: the CSV columns that name a row of the table; selected: the key tuples this
    command's table has (as strings); num_seeds: the seeds it asks for. A row of the old table
    with results (column `seeds` > 0) is lost when its key is not selected or when it holds more
    seeds than this command asks for."""
    path = os.path.join(args.out_dir, f'{name}.csv')
    if args.replace or args.dry_run or not os.path.exists(path):
        return
    with open(path, newline='') as f:
        old = list(csv.DictReader(f))
    if not old or any(k not in old[0] for k in (*key_fields, 'seeds')):
        return                            # not a table this driver wrote
    selected = {tuple(str(x) for x in k) for k in selected}
    lost = []
    for r in old:
        n = int(float(r['seeds'] or 0))
        key = tuple(r[k] for k in key_fields)
        if n and (key not in selected or n > num_seeds):
            lost.append(f'{"/".join(key)} ({n} seed{"s" if n != 1 else ""})')
    if lost:
        error(f'{path} holds results this command would drop from it: {", ".join(lost[:4])}'
              + (f' and {len(lost) - 4} more' if len(lost) > 4 else '')
              + '; select them too, write this table elsewhere (--out-dir), or pass --replace')


def seeds_arg(text: str) -> list[int]:
    return [int(s) for s in text.split(',') if s]


def list_arg(text: str) -> list[str]:
    return [s for s in text.split(',') if s]
