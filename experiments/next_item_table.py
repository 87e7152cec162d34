"""The next-item table: every baseline x dataset x seed, leave-one-out, both scenes, beside the
published figures (S3-Rec, CIKM 2020, on the same files; SASRec's ML-1M figure for ml-1m).

  python -m experiments.next_item_table --data-root /work/prepared --work-root /tmp/next_item \
      [--models poprec,sasrec,...] [--datasets LastFM,...] [--seeds 0,1,2] [--steps 3000]
      [--set sasrec:train_steps=5000 ...] [--collect-only] [--dry-run]

Prepare the data first (docs/data_prep.md, "Next-item protocol recipes"): one folder per
dataset under --data-root (Sports_and_Outdoors, Toys_and_Games, Yelp, LastFM: loo, 99
negatives, maxlen 50, --ban-history; ml-1m-sasrec: 100 negatives, maxlen 200).

Every run is `python main.py --config=experiments/configs/MODEL.py --workdir=... --config.*`
(printed, and written beside each cell); a finished run (metrics/test.json present) is not run
again, an unfinished one resumes. Writes docs/results/next_item.md and next_item.csv
(--out-dir): mean +- std over the seeds of HR@10 and NDCG@10, sampled ("99 negatives") and
full ("all items"), with the published figure and our mean's ratio to it. A run that fails
is named at the end, its cells are left out and the driver exits 1; Ctrl-C or a SIGTERM to the
driver lets the running run save its checkpoint and stops the driver (exit 130 / 143) before
the next run starts.

The per-run ledger, OUT/next_item_runs.csv (one row a model x dataset x seed: the four figures,
the date they were recorded, the command), keeps every result the table has seen, so run
folders may be deleted (or lost with a machine) without losing the table: a run with no
finished folder is taken from the ledger when the ledger's command has the same config and
overrides (the run folder and data root may differ), and is run again otherwise. The ledger is
only ever added to or corrected from a run folder; rows outside this invocation's selection
are kept as they are.
"""
from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ''):        # run as a script (python experiments/next_item_table.py)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import _runs  # noqa: E402
from experiments._ledger import Ledger, config_part  # noqa: E402,F401 (config_part: this module's name too)
from experiments._runs import ROOT, fmt, read_result, shown  # noqa: E402,F401 (this module's names)

DATASETS = ('Sports_and_Outdoors', 'Toys_and_Games', 'Yelp', 'LastFM', 'ml-1m-sasrec')
SHORT = {'Sports_and_Outdoors': 'Sports', 'Toys_and_Games': 'Toys', 'Yelp': 'Yelp', 'LastFM': 'LastFM',
         'ml-1m-sasrec': 'ml-1m-subset'}
MODELS = ('poprec', 'bpr', 'gru4rec', 'caser', 'sasrec', 'sasrec_plus', 'bert4rec', 'gcsan')
PAPER_NAME = {'poprec': 'PopRec', 'gru4rec': 'GRU4Rec', 'caser': 'Caser', 'sasrec': 'SASRec',
              'bert4rec': 'BERT4Rec'}

# HR@10 / NDCG@10 published on exactly these files (shared/data/README.md section 5):
# 'sampled': the S3-Rec paper's table (99 sampled negatives); 'full': its repository's table.
PUBLISHED = {
    'sampled': {
        'Sports': {'PopRec': (0.3423, 0.1902), 'GRU4Rec': (0.4299, 0.2527), 'Caser': (0.4014, 0.2390),
                   'SASRec': (0.4622, 0.2869), 'BERT4Rec': (0.4722, 0.2775)},
        'Toys': {'PopRec': (0.3008, 0.1618), 'GRU4Rec': (0.3896, 0.2274), 'Caser': (0.3540, 0.2183),
                 'SASRec': (0.4663, 0.3136), 'BERT4Rec': (0.4493, 0.2698)},
        'Yelp': {'PopRec': (0.3609, 0.2007), 'GRU4Rec': (0.7265, 0.4375), 'Caser': (0.6661, 0.4198),
                 'SASRec': (0.7373, 0.4642), 'BERT4Rec': (0.7597, 0.4778)},
        'LastFM': {'PopRec': (0.3037, 0.1687), 'GRU4Rec': (0.2817, 0.1550), 'Caser': (0.4431, 0.2428),
                   'SASRec': (0.4706, 0.2755), 'BERT4Rec': (0.4991, 0.2871)},
        # the public PyTorch SASRec on this subset and split (100 negatives, maxlen 200)
        'ml-1m-subset': {'SASRec': (0.800, 0.572)},
    },
    'full': {
        'Sports': {'PopRec': (0.0094, 0.0053), 'GRU4Rec': (0.0204, 0.0110), 'Caser': (0.0194, 0.0097),
                   'SASRec': (0.0350, 0.0192), 'BERT4Rec': (0.0191, 0.0099)},
        'Toys': {'PopRec': (0.0113, 0.0061), 'GRU4Rec': (0.0176, 0.0084), 'Caser': (0.0270, 0.0141),
                 'SASRec': (0.0675, 0.0374), 'BERT4Rec': (0.0203, 0.0099)},
        'Yelp': {'PopRec': (0.0099, 0.0051), 'GRU4Rec': (0.0263, 0.0134), 'Caser': (0.0253, 0.0129),
                 'SASRec': (0.0274, 0.0136), 'BERT4Rec': (0.0090, 0.0045)},
        'LastFM': {'PopRec': (0.0440, 0.0203), 'GRU4Rec': (0.0367, 0.0187), 'Caser': (0.0413, 0.0214),
                   'SASRec': (0.0688, 0.0390), 'BERT4Rec': (0.0633, 0.0337)},
    },
}
SCENE_NAME = {'sampled': '99 negatives (100 on ml-1m)', 'full': 'all items'}
LEDGER = 'next_item_runs.csv'
LEDGER_KEYS = ('model', 'dataset', 'seed')
FIGURES = (('hr10_sampled', 'sampled', 'hr@10'), ('ndcg10_sampled', 'sampled', 'ndcg@10'),
           ('hr10_full', 'full', 'hr@10'), ('ndcg10_full', 'full', 'ndcg@10'))


def published(model: str, dataset: str, scene: str):
    return PUBLISHED[scene].get(SHORT[dataset], {}).get(PAPER_NAME.get(model.split(':')[0], ''))


def run_command(model, dataset, seed, args, overrides) -> list[str]:
    """`model` is a config file name, optionally with a variant: 'gru4rec:softmax'."""
    name, _, variant = model.partition(':')
    workdir = os.path.join(args.work_root, model.replace(':', '-'), dataset, f'seed{seed}')
    cmd = [sys.executable, 'main.py',                                                   # cwd: ROOT
           f'--config=experiments/configs/{name}.py' + (f':{variant}' if variant else ''),
           f'--workdir={workdir}', f'--config.data_dir={os.path.join(args.data_root, dataset)}',
           f'--config.seed={seed}']
    if args.steps and model != 'poprec':
        cmd.append(f'--config.train_steps={args.steps}')
    for key, value in _runs.overrides_for(overrides, model, dataset):
        cmd.append(f'--config.{key}={value}')
    return cmd


def ledger_values(res) -> dict:
    """A finished run's figures, by the ledger's column names."""
    return {field: res[scene][metric] for field, scene, metric in FIGURES}


def ledger_result(row) -> dict:
    res = {'sampled': {}, 'full': {}}
    for field, scene, metric in FIGURES:
        res[scene][metric] = float(row[field])
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data-root', required=True, help='folder with one prepared dataset a name')
    ap.add_argument('--work-root', required=True, help='run folders go to WORK/MODEL/DATASET/seedS')
    ap.add_argument('--models', default=','.join(MODELS),
                    help='config names, each optionally with a variant (gru4rec:softmax)')
    ap.add_argument('--datasets', default=','.join(DATASETS))
    ap.add_argument('--seeds', default='0,1,2')
    ap.add_argument('--steps', type=int, default=0, help='train_steps of every trained model (0: the config\'s)')
    ap.add_argument('--set', action='append', default=[], metavar='MODEL[@DATASET]:KEY=VALUE',
                    help='a config override for one model (and dataset; model * = every model), e.g. '
                         'sasrec:model_kwargs.dropout_rate=0.2')
    _runs.add_output_args(ap)
    _runs.add_workers_arg(ap)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    args.argv = argv
    models = [m for m in args.models.split(',') if m]
    datasets = [d for d in args.datasets.split(',') if d]
    seeds = [int(s) for s in args.seeds.split(',') if s]
    bad = [m for m in models
           if not os.path.exists(os.path.join(ROOT, 'experiments', 'configs', m.split(':')[0] + '.py'))]
    if bad:
        ap.error(f'no config file for {bad} (experiments/configs/)')
    for d in datasets:
        if not args.dry_run and not os.path.isdir(os.path.join(args.data_root, d)):
            ap.error(f'{os.path.join(args.data_root, d)} is not a prepared dataset folder '
                     '(docs/data_prep.md, "Next-item protocol recipes")')
    overrides = _runs.parse_sets(args.set, ap.error)
    _runs.refuse_narrowing(args, 'next_item', ('model', 'dataset', 'scene'),
                           [(m, SHORT[d], sc) for m in models for d in datasets for sc in ('sampled', 'full')],
                           len(seeds), ap.error)
    ledger = Ledger(os.path.join(args.out_dir, LEDGER), LEDGER_KEYS, [f for f, _, _ in FIGURES])

    def collect_rows():
        """The table's rows from the run folders and the ledger, running (or, in the first pass
        of --workers, queueing) the missing runs."""
        rows = []
        for model in models:
            for dataset in datasets:
                cells = {'sampled': {'hr': [], 'ndcg': []}, 'full': {'hr': [], 'ndcg': []}}
                cmd0 = None
                for seed in seeds:
                    cmd = run_command(model, dataset, seed, args, overrides)
                    cmd0 = cmd0 or cmd
                    workdir = _runs.workdir_of(cmd)
                    res = read_result(workdir, cmd=cmd)
                    key = (model, dataset, seed)
                    from_folder, trained = res is not None, False
                    if res is None:
                        row = ledger.lookup(key, cmd)
                        res = ledger_result(row) if row is not None else None
                    if res is None and not args.collect_only:
                        if _runs.defer(args, cmd, lambda wd=workdir, c=cmd: read_result(wd, cmd=c)):
                            continue                    # --workers: queued (the first pass)
                        if _runs.attempted(args, workdir):
                            continue                    # --workers: run, and failed (noted)
                        _runs.announce(cmd)
                        if not args.dry_run:
                            rc = _runs.run_logged(cmd, workdir, graceful=True)
                            res = read_result(workdir, cmd=cmd)
                            if rc or res is None:
                                _runs.note_failure(args, os.path.join(workdir, 'run.log'))
                            from_folder = trained = res is not None
                    if from_folder:                     # a run folder: the ledger takes it (or is corrected)
                        ledger.take(key, ledger_values(res), cmd, trained, workdir)
                    if res is None:
                        continue
                    for scene in ('sampled', 'full'):
                        cells[scene]['hr'].append(res[scene]['hr@10'])
                        cells[scene]['ndcg'].append(res[scene]['ndcg@10'])
                for scene in ('sampled', 'full'):
                    pub = published(model, dataset, scene)
                    hr, nd = cells[scene]['hr'], cells[scene]['ndcg']
                    (hr_m, hr_s), (nd_m, nd_s) = _runs.mean_std(hr), _runs.mean_std(nd)
                    rows.append(dict(model=model, dataset=SHORT[dataset], scene=scene, seeds=len(hr),
                                     hr10_mean=hr_m, hr10_std=hr_s, ndcg10_mean=nd_m, ndcg10_std=nd_s,
                                     published_hr10=pub[0] if pub else '', published_ndcg10=pub[1] if pub else '',
                                     hr_text=fmt(hr), ndcg_text=fmt(nd), command=shown(cmd0)))
        return rows

    if _runs.start_deferring(args):   # --workers: find the missing runs, run them, then collect
        collect_rows()
        _runs.run_deferred(args)
    rows = collect_rows()
    if args.dry_run:
        return 0
    ledger.write()
    write_tables(rows, args, seeds)
    return _runs.failure_status(args, 'their cells are left out')


def write_tables(rows, args, seeds):
    os.makedirs(args.out_dir, exist_ok=True)
    fields = ['model', 'dataset', 'scene', 'seeds', 'hr10_mean', 'hr10_std', 'ndcg10_mean', 'ndcg10_std',
              'published_hr10', 'published_ndcg10', 'command']
    _runs.write_csv(os.path.join(args.out_dir, 'next_item.csv'), fields, rows)
    ratio = _runs.ratio_text

    lines = ['# Next-item baselines (leave-one-out)', '',
             f'Made by `{_runs.made_by("experiments.next_item_table", args.argv)}`; '
             f'seeds {",".join(map(str, seeds))}; mean ± std over the seeds. "published": the S3-Rec '
             'paper (99 negatives) and repository (all items) on the same files, the public PyTorch '
             'SASRec on ml-1m-subset; (x) = our mean / the published figure. Per-run figures, dates and '
             f'commands: {LEDGER}.', '']
    for scene in ('sampled', 'full'):
        lines += [f'## {SCENE_NAME[scene]}', '',
                  '| model | dataset | seeds | HR@10 | published | NDCG@10 | published |',
                  '|---|---|---|---|---|---|---|']
        for r in rows:
            if r['scene'] != scene or not r['seeds']:
                continue
            lines.append(f'| {r["model"]} | {r["dataset"]} | {r["seeds"]} | {r["hr_text"]}'
                         f'{ratio(r["hr10_mean"], r["published_hr10"])} | {r["published_hr10"] or "-"} | '
                         f'{r["ndcg_text"]}{ratio(r["ndcg10_mean"], r["published_ndcg10"])} | '
                         f'{r["published_ndcg10"] or "-"} |')
        lines.append('')
    missing = sorted({f'{r["model"]} x {r["dataset"]}' for r in rows if not r['seeds']})
    if missing:
        lines += ['Not run yet (no finished run in the work root or the ledger): ' + ', '.join(missing) + '.', '']
    lines += ['How precise these figures are (the standard error of each published cell), what the '
              'shortfalls are, and runs made by hand: [next_item_notes.md](next_item_notes.md).', '']
    _runs.write_markdown(args.out_dir, 'next_item', '\n'.join(lines) + '\n', len(rows))


if __name__ == '__main__':
    sys.exit(main())
