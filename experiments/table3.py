"""AOS4Rec's Table 3 (every row) plus SASRec+, GPT-style and CRR-Transformer, on ml-1m-paper and
yoochoose-100k, paper protocol, both scenes, beside the paper's figures.

  python -m experiments.table3 --data-root /work/prepared --work-root /work/runs/table3 \
      [--rows poprec,sasrec,...] [--datasets ml-1m-paper,...] [--seeds 0,1,2] [--steps N]
      [--set ROW[@DATASET]:KEY=VALUE ...] [--out-dir docs/results] [--collect-only] [--dry-run]

The full table (14 rows x 2 datasets x 3 seeds = 84 runs, one at a time):

  python -m experiments.table3 --data-root /work/prepared --work-root /work/runs/table3 \
      --seeds 0,1,2 --out-dir docs/results

Compute, measured 2026-12-05 on the project's 2-core CPU while 4-5 other jobs ran on it (load
average 12-13, so upper bounds), one 200-step run a row with one validation:
  sasrec.py:paper, ml-1m-paper: 2.0-2.3 steps/s after compilation, 2 min 16 s for the run,
    validation of the 2,096 users (top-K) 4.4 s, 0.94 GB peak;
  aos4rec.py (AOS4Rec-T), ml-1m-paper, 200 oracular steps + 20 critic updates + 20 SSRGAN
    rounds: oracular phase 0.46-0.50 steps/s, a beam-5 validation 32 s, the 20 critic updates
    2.5 min and the 20 rounds 6.5 min with their compilation (at most 20 s a round), 18 min 41 s
    for the run, 2.8 GB peak.
From these (the other next-item rows assumed at SASRec's rate, AOS4Rec-R at half AOS4Rec-T's
cost as the GRU's MLE steps are, README), one seed on this CPU: ml-1m-paper about 22-25 h
(AOS4Rec-T 5,000 steps 2.9 h + up to 500 critic updates + 1,000 rounds 4-5.5 h; AOS4Rec-R about
half; RecGAN 2-3 h; the 10 next-item rows 5,000 steps each, about 45 min each, CRR and IRGAN
adding their CRR steps and GAN rounds), yoochoose-100k about 6 h: about 30 CPU-hours a seed, 90
for the table, one run at a time. Measured since (2026-12-07, beside one other job): a
5,000-step run on ml-1m-paper takes BPR 15 s and Caser 1 min, so the next-item figure above is
an upper bound for the light rows; GRU4Rec+ goes at about 2 steps/s (45 min). Not measured on
an accelerator. The runs are independent:
several machines sharing one work root can each take some --rows or --seeds (main.py refuses a
second process on a workdir); plan with a 200-step run of a row on the target machine first
(--rows ROW --seeds 0 --set ROW:train_steps=200 and a scratch --work-root).

What a row runs is in ROWS below: a config file of experiments/configs/, a variant, overrides on
every dataset and per dataset. The baselines use the configs' ':paper' variant (embedding size
128, the AOS4Rec paper's rule: "the embedding size is set to be 128 for all baseline methods").
Every run is `python main.py --config=experiments/configs/CONFIG.py[:VARIANT] --workdir=WORK/
ROW/DATASET/seedS --config.data_dir=DATA/DATASET --config.seed=S --config.KEY=VALUE...`,
printed before it starts, appended to WORK/commands.log (start, exit status) and written beside
each cell of table3.csv. Runs go seed by seed (all rows of seed 0 first, so a partial table has
every row), one at a time; a finished run (metrics/test.json) is skipped, an unfinished one
resumes from its checkpoint, a failed one is reported (WORK/ROW/DATASET/seedS/run.log) and the
driver goes on. A row whose config file does not exist yet (e.g. irgan.py while it is written)
is reported "not available" instead of failing. Then docs/results/table3.md and table3.csv
(--out-dir): mean ± sample std over the seeds of Prec@K, NDCG@K and BLEU@K (K = 10 on ml-1m,
6 on yoochoose), sampled (1000 candidates, the paper's scene) and full (all items), the paper's
figure beside ours with our mean's ratio to it, the rows not run yet, and the order of the rows
compared with the paper's (Spearman's rank correlation, inverted pairs).

The per-run ledger, OUT/table3_runs.csv (one row a row x dataset x seed: the six figures, K, the
K-list, the date they were recorded, the command; experiments/_ledger.py), keeps every result the
table has seen, so run folders may be deleted or lost with a machine: a run with no finished
folder is taken from the ledger when the ledger's command has the same config and overrides. A
row of the table already in --out-dir with more seeds than a collection finds (runs that finished
before the ledger existed, 2026-12-06) is kept as it was, said, and listed under the table;
--replace writes only what was found.

The paper's datasets are not ours: its MovieLens is ML-20M (85,307 users) and its YOOCHOOSE the
whole click log (168,202 users); ml-1m-paper is the ML-1M subset (2,096 users) and
yoochoose-100k a 691-user sample, both prepared with the paper's protocol (docs/protocol.md).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys

if __package__ in (None, ''):        # run as a script (python experiments/table3.py)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import _runs  # noqa: E402
from experiments._ledger import Ledger  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Row:
    paper: str | None          # the row's name in the paper's Table 3 (None: not in the paper)
    config: str                # experiments/configs/CONFIG.py
    variant: str = ''          # CONFIG.py:VARIANT ('' = the file's defaults)
    sets: tuple = ()           # (key, value) overrides on every dataset
    per_dataset: dict = dataclasses.field(default_factory=dict)   # dataset -> (key, value) pairs
    trains: bool = True        # False: --steps does not apply (PopRec)
    label: str = ''            # the row's name in our tables when the paper has none

    @property
    def name(self) -> str:
        return self.paper or self.label


# Overrides by dataset (the kept parameters are always the best validation NDCG@K's:
# config.select_by). ml-1m-paper: 298,734 training windows of the seq2seq models (2,334 steps of
# 128 an epoch): AOS4Rec and RecGAN keep their configs' steps (5,000); the next-item baselines
# train on whole user sequences (SASRec: 16.4 steps an epoch), so 5,000 steps (about 300 SASRec
# epochs; next_item.md's ml-1m-sasrec runs) instead of their configs' 20,000. yoochoose-100k:
# 6,690 training items (about 50 steps an epoch of windows): fewer steps, validated more often.
ML, YC = 'ml-1m-paper', 'yoochoose-100k'
_NEXT_ML = (('train_steps', 5000), ('eval_every', 500), ('checkpoint_every', 500))
_NEXT_YC = (('train_steps', 2000), ('eval_every', 200), ('checkpoint_every', 1000))
_SEQ2SEQ_YC = (('train_steps', 1000), ('eval_every', 100), ('checkpoint_every', 500))
_NEXT = {ML: _NEXT_ML, YC: _NEXT_YC}

#  row key        paper name     config          variant  every dataset / per dataset
ROWS = {
    'poprec':      Row('PopRec',    'poprec',      '',      trains=False),
    'bpr':         Row('BPR',       'bpr',         'paper', per_dataset=_NEXT),
    'gru4rec':     Row('GRU4Rec+',  'gru4rec',     'paper', per_dataset=_NEXT),
    'sasrec':      Row('SASRec',    'sasrec',      'paper', per_dataset=_NEXT),
    'gcsan':       Row('GCSAN',     'gcsan',       'paper', per_dataset=_NEXT),
    'caser':       Row('Caser',     'caser',       'paper', per_dataset=_NEXT),
    'bert4rec':    Row('BERT4Rec',  'bert4rec',    'paper', per_dataset=_NEXT),
    'irgan':       Row('IRGAN',     'irgan',       'paper',
                       per_dataset={ML: _NEXT_ML, YC: _NEXT_YC + (('irgan.gan_steps', 500),)}),
    # RecGAN (Bharadhwaj et al. 2018) is a recurrent GAN trained by policy gradient: SeqGAN's
    # REINFORCE on the GRU seq2seq generator (docs/seqgan.md)
    'recgan':      Row('RecGAN',    'seqgan',      'gru',
                       per_dataset={YC: _SEQ2SEQ_YC + (('seqgan.gan_steps', 100),)}),
    'aos4rec_r':   Row('AOS4Rec-R', 'aos4rec',     'both', sets=(('model', 'gru'),),
                       per_dataset={YC: _SEQ2SEQ_YC + (('aos4rec.critic_pretrain_steps', 200),
                                                       ('aos4rec.gan_steps', 200))}),
    'aos4rec_t':   Row('AOS4Rec-T', 'aos4rec',     'both',
                       per_dataset={YC: _SEQ2SEQ_YC + (('aos4rec.critic_pretrain_steps', 200),
                                                       ('aos4rec.gan_steps', 200))}),
    # not in the paper's table
    'sasrec_plus': Row(None,        'sasrec_plus', 'paper', per_dataset=_NEXT, label='SASRec+'),
    'gpt':         Row(None,        'gpt',         'paper', per_dataset=_NEXT, label='GPT-style'),
    'crr':         Row(None,        'crr',         'paper', label='CRR-Transformer',
                       per_dataset={ML: _NEXT_ML + (('crr.crr_steps', 2000),),
                                    YC: _NEXT_YC + (('crr.crr_steps', 1000),)}),
}
DATASETS = ('ml-1m-paper', 'yoochoose-100k')
PAPER_DATASET = {'ml-1m-paper': 'MovieLens', 'yoochoose-100k': 'YOOCHOOSE'}
METRICS = ('prec', 'ndcg', 'bleu')
METRIC_NAME = {'prec': 'Prec', 'ndcg': 'NDCG', 'bleu': 'BLEU'}
SCENES = ('sampled', 'full')
# the columns of table3.csv
CSV_FIELDS = (('row', 'paper_name', 'config', 'dataset', 'scene', 'k', 'status', 'seeds', 'seeds_done',
               'seeds_asked', 'decoding')
              + tuple(f for m in METRICS for f in (f'{m}_mean', f'{m}_std', f'paper_{m}', f'{m}_ratio'))
              + ('command',))
LEDGER = 'table3_runs.csv'
LEDGER_KEYS = ('row', 'dataset', 'seed')
LEDGER_FIGURES = tuple(f'{m}_{scene}' for scene in SCENES for m in METRICS)
LEDGER_TEXTS = ('k', 'decoding')
SCENE_NAME = {'sampled': '1000 sampled candidates (the paper\'s scene)',
              'full': 'all items (the paper reports none)'}

# The paper's Table 3 (Zhao et al., "Sequential Recommendation with Adversarial Oracular Seq2seq
# Learning" / AOS4Rec, IJCAI-20, proceedings p. 1909, Table 3; ../shared/seeds/000_*):
# (Prec@K, NDCG@K, BLEU@K) with 1000 sampled candidates; YOOCHOOSE K = 6, MovieLens (ML-20M)
# K = 10.
PAPER = {
    'YOOCHOOSE': {
        'PopRec': (0.109, 0.126, 0.002), 'BPR': (0.163, 0.175, 0.004),
        'GRU4Rec+': (0.492, 0.530, 0.056), 'SASRec': (0.531, 0.546, 0.063),
        'GCSAN': (0.526, 0.542, 0.091), 'Caser': (0.514, 0.556, 0.057),
        'BERT4Rec': (0.527, 0.541, 0.060), 'IRGAN': (0.366, 0.402, 0.017),
        'RecGAN': (0.498, 0.539, 0.098), 'AOS4Rec-R': (0.539, 0.552, 0.128),
        'AOS4Rec-T': (0.552, 0.560, 0.135)},
    'MovieLens': {
        'PopRec': (0.403, 0.424, 0.001), 'BPR': (0.439, 0.448, 0.004),
        'GRU4Rec+': (0.645, 0.621, 0.038), 'SASRec': (0.658, 0.623, 0.041),
        'GCSAN': (0.667, 0.643, 0.053), 'Caser': (0.660, 0.634, 0.037),
        'BERT4Rec': (0.663, 0.645, 0.042), 'IRGAN': (0.484, 0.491, 0.015),
        'RecGAN': (0.620, 0.619, 0.065), 'AOS4Rec-R': (0.651, 0.660, 0.090),
        'AOS4Rec-T': (0.682, 0.680, 0.074)},
}


def paper_figures(row: str, dataset: str, scene: str):
    """(Prec, NDCG, BLEU) of the paper for a row on a dataset, or None (the full scene, a row or
    dataset the paper does not have)."""
    if scene != 'sampled' or row not in ROWS or ROWS[row].paper is None:
        return None
    return PAPER.get(PAPER_DATASET.get(dataset, ''), {}).get(ROWS[row].paper)


def workdir(args, row: str, dataset: str, seed: int) -> str:
    return os.path.join(args.work_root, row, dataset, f'seed{seed}')


def run_command(row: str, dataset: str, seed: int, args, overrides) -> list[str]:
    """main.py's command line for one run: the row's config, variant and overrides, then --steps,
    then the --set overrides; a key set twice keeps its first place and its last value."""
    r = ROWS[row]
    sets = {'data_dir': os.path.join(args.data_root, dataset), 'seed': seed}
    for key, value in r.sets + tuple(r.per_dataset.get(dataset, ())):
        sets[key] = value
    if args.steps and r.trains:
        sets['train_steps'] = args.steps
    for key, value in _runs.overrides_for(overrides, row, dataset):
        sets[key] = value
    return _runs.main_command(r.config, r.variant, workdir(args, row, dataset, seed), sets.items())


def _metric(res: dict, scene: str, name: str):
    key = next(k for k in res[scene] if k.startswith(name + '@'))
    return res[scene][key]


def _k(res: dict) -> int:
    return int(next(k for k in res['sampled'] if k.startswith('prec@')).split('@')[1])


def _decoding(res: dict) -> str:
    d = res.get('decode')
    if not isinstance(d, dict):
        return str(d or '')
    return d.get('strategy', '') + (f" {d['beam_size']}" if d.get('strategy') == 'beam' else '')


def ledger_values(res: dict) -> dict:
    """A finished run's figures and texts, by the ledger's column names."""
    out = {f'{m}_{scene}': _metric(res, scene, m) for scene in SCENES for m in METRICS}
    return dict(out, k=_k(res), decoding=_decoding(res))


def ledger_result(row: dict) -> dict:
    """A ledger row as the parts of metrics/test.json this table reads."""
    k = int(row['k'])
    res = {scene: {f'{m}@{k}': float(row[f'{m}_{scene}']) for m in METRICS} for scene in SCENES}
    return dict(res, decode=row['decoding'])


def collect(args, rows, datasets, seeds, overrides) -> list[dict]:
    """Runs what is missing (unless --collect-only / --dry-run), then one table row per
    (row, dataset, scene). A run with no finished folder is taken from the ledger
    (OUT/table3_runs.csv) when the ledger has it under the same config and overrides."""
    record = os.path.join(args.work_root, 'commands.log')
    ledger = Ledger(os.path.join(args.out_dir, LEDGER), LEDGER_KEYS, LEDGER_FIGURES, LEDGER_TEXTS)
    results = {}
    for seed in seeds:                    # seed-major: every row of seed 0 first
        for dataset in datasets:
            for row in rows:
                if not _runs.config_exists(ROWS[row].config):
                    continue
                cmd = run_command(row, dataset, seed, args, overrides)
                wd = _runs.workdir_of(cmd)
                key = (row, dataset, seed)
                res = _runs.read_result(wd, cmd=cmd)
                if res is not None:       # a run folder: the ledger takes it (or is corrected)
                    ledger.take(key, ledger_values(res), cmd, trained=False, workdir=wd)
                else:
                    kept = ledger.lookup(key, cmd)
                    if kept is not None:
                        res = ledger_result(kept)
                    else:
                        res = _runs.ensure_run(cmd, lambda wd=wd, c=cmd: _runs.read_result(wd, cmd=c),
                                               args, record=record)
                        if res is not None:
                            ledger.take(key, ledger_values(res), cmd, trained=True, workdir=wd)
                results[row, dataset, seed] = res
    if not args.dry_run:
        ledger.write()
    out = []
    for row in rows:
        available = _runs.config_exists(ROWS[row].config)
        for dataset in datasets:
            done = [(s, results.get((row, dataset, s))) for s in seeds]
            done = [(s, r) for s, r in done if r is not None]
            cmd0 = run_command(row, dataset, seeds[0], args, overrides)
            status = ('not available' if not available else 'not run' if not done
                      else 'partial' if len(done) < len(seeds) else 'done')
            for scene in SCENES:
                rec = dict(row=row, paper_name=ROWS[row].paper or '', dataset=dataset, scene=scene,
                           k=_k(done[0][1]) if done else '', seeds=len(done),
                           seeds_done=' '.join(str(s) for s, _ in done), seeds_asked=len(seeds),
                           decoding=_decoding(done[0][1]) if done else '', status=status,
                           command=_runs.shown(cmd0, quote=True) if available else '',
                           config=f'{ROWS[row].config}.py' + (f':{ROWS[row].variant}' if ROWS[row].variant else ''))
                pub = paper_figures(row, dataset, scene)
                for i, m in enumerate(METRICS):
                    vals = [_metric(r, scene, m) for _, r in done]
                    rec[f'{m}_mean'], rec[f'{m}_std'] = _runs.mean_std(vals)
                    rec[f'{m}_text'] = _runs.fmt(vals)
                    rec[f'paper_{m}'] = pub[i] if pub else ''
                    rec[f'{m}_ratio'] = (round(rec[f'{m}_mean'] / pub[i], 4)
                                         if pub and rec[f'{m}_mean'] != '' and pub[i] else '')
                out.append(rec)
    return out


def _old_record(r: dict) -> dict:
    """A row of an earlier table3.csv as collect() makes it (numbers as numbers, '' kept)."""
    num = lambda v: float(v) if v not in ('', None) else ''
    rec = dict(r, seeds=int(float(r['seeds'] or 0)), k=int(float(r['k'])) if r['k'] else '',
               seeds_asked=int(float(r['seeds_asked'] or 0)))
    for m in METRICS:
        for f in (f'{m}_mean', f'{m}_std', f'paper_{m}', f'{m}_ratio'):
            rec[f] = num(r.get(f, ''))
        rec[f'{m}_text'] = _runs.fmt_mean_std(rec[f'{m}_mean'], rec[f'{m}_std'])
    return rec


def keep_fuller_rows(args, table: list[dict]) -> tuple[list[dict], list[str]]:
    """A row of the table already in --out-dir with more finished seeds than this collection
    found (its run folders are gone and the runs predate the ledger, or they ran on another
    machine) is kept as it is instead of being replaced by a poorer one; --replace writes what
    was found. Returns the table and the names of the kept rows (said, and listed in table3.md)."""
    path = os.path.join(args.out_dir, 'table3.csv')
    if args.replace or not os.path.exists(path):
        return table, []
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        if not set(CSV_FIELDS) <= set(reader.fieldnames or ()):
            return table, []              # not a table this driver wrote
        old = {(r['row'], r['dataset'], r['scene']): r for r in reader}
    out, kept = [], []
    for rec in table:
        prev = old.get((rec['row'], rec['dataset'], rec['scene']))
        if prev is not None and int(float(prev['seeds'] or 0)) > rec['seeds']:
            out.append(_old_record(prev))
            name = f'{rec["row"]} x {rec["dataset"]}'
            if name not in kept:
                kept.append(name)
                print(f'table3: kept {name} from {path} (seeds {prev["seeds_done"]} there, '
                      f'{rec["seeds_done"] or "none"} found now; --replace drops them)', flush=True)
        else:
            out.append(rec)
    return out, kept


def rank_section(table: list[dict], datasets) -> list[str]:
    """Markdown: per dataset and metric, the sampled-scene order of the rows that have both our
    mean and the paper's figure, Spearman's rho against the paper's order, the inverted pairs."""
    lines = ['## Order of the rows against the paper\'s (generated)', '',
             'Sampled scene, rows with both a finished run and a paper figure. rho: Spearman\'s rank '
             'correlation of our means with the paper\'s figures (1 = same order); an inverted pair '
             '"A > B" is one the paper orders A above B and we order B above A (ties are not '
             'inverted).', '']
    for dataset in datasets:
        recs = [r for r in table if r['dataset'] == dataset and r['scene'] == 'sampled'
                and r['seeds'] and r['paper_prec'] != '']
        for m in METRICS:
            names = [r['paper_name'] for r in recs]
            ours = [r[f'{m}_mean'] for r in recs]
            ref = [r[f'paper_{m}'] for r in recs]
            head = f'- {dataset}, {METRIC_NAME[m]}@K'
            if len(recs) < 2:
                lines.append(f'{head}: fewer than 2 comparable rows.')
                continue
            rho = _runs.spearman(ours, ref)
            inv = _runs.inverted_pairs(names, ours, ref)
            n_pairs = len(recs) * (len(recs) - 1) // 2
            order = lambda vals: ' > '.join(n for _, n in sorted(zip(vals, names), key=lambda t: -t[0]))
            lines.append(f'{head}: {len(recs)} rows, rho = '
                         + (f'{rho:.2f}' if rho is not None else 'n/a')
                         + f', {len(inv)} of {n_pairs} pairs inverted'
                         + (': ' + ', '.join(f'{a} > {b}' for a, b in inv) if inv else '') + '.')
            lines.append(f'  paper: {order(ref)}; ours: {order(ours)}.')
    lines.append('')
    return lines


def write_tables(table: list[dict], args, argv, rows, datasets, seeds, kept=()) -> None:
    _runs.write_csv(os.path.join(args.out_dir, 'table3.csv'), CSV_FIELDS, table)

    lines = ['# AOS4Rec Table 3 rebuilt: sequential recommendation, paper protocol', '',
             f'Made by `{_runs.made_by("experiments.table3", argv)}`; seeds '
             f'{",".join(map(str, seeds))}; mean ± sample std over the finished seeds. "paper": '
             'AOS4Rec (IJCAI-20) Table 3, p. 1909, 1000 sampled candidates, on ML-20M and the whole '
             'YOOCHOOSE log (ours: the ML-1M subset, 2,096 users, and a 691-user YOOCHOOSE sample); '
             '(x) = our mean / the paper\'s figure. K = 10 (ml-1m-paper), 6 (yoochoose-100k). '
             'K-list: how the row makes its list (topk: the K best next-item scores; beam b; ...). '
             'Per-run commands, configs and stds: table3.csv; what each row runs: '
             'experiments/table3.py, ROWS.', '']
    for dataset in datasets:
        for scene in SCENES:
            recs = [r for r in table if r['dataset'] == dataset and r['scene'] == scene and r['seeds']]
            if not recs:
                continue
            k = recs[0]['k']
            lines += [f'## {dataset}, {SCENE_NAME[scene]}', '',
                      '| row | config | seeds | K-list | ' + ' | '.join(
                          f'{METRIC_NAME[m]}@{k} | paper' for m in METRICS) + ' |',
                      '|---|---|---|---|' + '---|---|' * len(METRICS)]
            for r in recs:
                name = (ROWS[r['row']].name if r['row'] in ROWS else r['paper_name']) or r['row']
                cells = []
                for m in METRICS:
                    cells.append(r[f'{m}_text'] + _runs.ratio_text(r[f'{m}_mean'], r[f'paper_{m}']))
                    cells.append(str(r[f'paper_{m}']) if r[f'paper_{m}'] != '' else '-')
                lines.append(f'| {name} | {r["config"]} | {r["seeds"]} | {r["decoding"]} | '
                             + ' | '.join(cells) + ' |')
            lines.append('')
    lines += rank_section(table, datasets)
    pairs = {(r['row'], r['dataset']): r for r in table}
    missing = [f'{row} x {d}' for (row, d), r in pairs.items() if r['status'] == 'not run']
    partial = [f'{row} x {d} ({r["seeds"]}/{r["seeds_asked"]} seeds)' for (row, d), r in pairs.items()
               if r['status'] == 'partial']
    unavailable = sorted({f'{row} (experiments/configs/{ROWS[row].config}.py does not exist yet)'
                          for (row, _), r in pairs.items() if r['status'] == 'not available'})
    if missing:
        lines += ['Not run yet (no finished run in the work root): ' + ', '.join(missing) + '.', '']
    if partial:
        lines += ['Fewer seeds than asked: ' + ', '.join(partial) + '.', '']
    if unavailable:
        lines += ['Not available: ' + ', '.join(unavailable) + '.', '']
    if kept:
        lines += ['Kept from the table this one replaced, with more seeds than this collection found '
                  '(their run folders are gone and they predate the ledger, table3_runs.csv): '
                  + ', '.join(kept) + '.', '']
    _runs.write_markdown(args.out_dir, 'table3', '\n'.join(lines), len(table))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=
                                 'rows: ' + ', '.join(f'{k} ({r.paper or "not in the paper"}: '
                                                      f'{r.config}.py{":" + r.variant if r.variant else ""}'
                                                      + ''.join(f' {k}={v}' for k, v in r.sets) + ')'
                                                      for k, r in ROWS.items()))
    ap.add_argument('--data-root', required=True, help='folder with one prepared dataset a name')
    ap.add_argument('--work-root', required=True, help='run folders go to WORK/ROW/DATASET/seedS')
    ap.add_argument('--rows', default=','.join(ROWS), help='row keys (ROWS), comma-separated')
    ap.add_argument('--datasets', default=','.join(DATASETS))
    ap.add_argument('--seeds', default='0,1,2')
    ap.add_argument('--steps', type=int, default=0,
                    help="train_steps of every trained row (0: the rows' own, ROWS)")
    ap.add_argument('--set', action='append', default=[], metavar='ROW[@DATASET]:KEY=VALUE',
                    help='a config override for one row (and dataset; row * = every row), e.g. '
                         'sasrec@yoochoose-100k:train_steps=3000; it wins over ROWS and --steps')
    _runs.add_output_args(ap)
    _runs.add_workers_arg(ap)
    args = ap.parse_args(argv)
    rows = _runs.list_arg(args.rows)
    datasets = _runs.list_arg(args.datasets)
    seeds = _runs.seeds_arg(args.seeds)
    bad = [r for r in rows if r not in ROWS]
    if bad:
        ap.error(f'unknown rows {bad} (known: {", ".join(ROWS)})')
    if not seeds or not datasets or not rows:
        ap.error('--rows, --datasets and --seeds need at least one value each')
    if not (args.dry_run or args.collect_only):
        for d in datasets:
            if not os.path.isdir(os.path.join(args.data_root, d)):
                ap.error(f'{os.path.join(args.data_root, d)} is not a prepared dataset folder '
                         '(docs/data_prep.md)')
    overrides = _runs.parse_sets(args.set, ap.error)
    unknown = [t for t in overrides if t != '*' and t.split('@')[0] not in ROWS]
    if unknown:
        ap.error(f'--set for unknown rows {unknown}')
    for row in rows:
        if not _runs.config_exists(ROWS[row].config):
            print(f'{row}: not available (experiments/configs/{ROWS[row].config}.py does not exist yet)',
                  file=sys.stderr, flush=True)
    _runs.refuse_narrowing(args, 'table3', ('row', 'dataset', 'scene'),
                           [(r, d, sc) for r in rows for d in datasets for sc in SCENES], len(seeds), ap.error)
    if _runs.start_deferring(args):      # --workers: find the missing runs, run them, then collect
        collect(args, rows, datasets, seeds, overrides)
        _runs.run_deferred(args)
    table = collect(args, rows, datasets, seeds, overrides)
    if args.dry_run:
        return 0
    table, kept = keep_fuller_rows(args, table)
    write_tables(table, args, argv, rows, datasets, seeds, kept)
    return _runs.failure_status(args)


if __name__ == '__main__':
    sys.exit(main())
