"""Generation strategies on one trained GPT-style model: top-K, greedy, beam, temperature
sampling, multi-sequence RRA / RA (after Volodkevich et al., arXiv:2409.17730; docs/gpt.md).

  python -m experiments.strategies_table --data-root /work/prepared --work-root /work/runs/strategies \
      [--dataset ml-1m-paper] [--seeds 0] [--strategies topk,greedy,...] [--steps N]
      [--set [gpt[@DATASET]:]KEY=VALUE ...] [--out-dir docs/results] [--collect-only] [--dry-run]

The full table (one model, nine decodings of its kept parameters):

  python -m experiments.strategies_table --data-root /work/prepared --work-root /work/runs/strategies

Per seed: one training run, `python main.py --config=experiments/configs/gpt.py
--workdir=WORK/gpt/DATASET/seedS --config.data_dir=DATA/DATASET --config.seed=S
--config.train_steps=5000 ...` (the GPT network's defaults: d 64, 2 layers, 1 head; K-list by
top-K during training, so the kept parameters are the best validation NDCG@K of top-K lists),
then one `python -m aos4rec_jax.evaluate --workdir=RUN --tag=TAG --strategy=S [--beam=B]
[--temperature=T] [--num-sequences=N] --splits=test --seed=S` per strategy of STRATEGIES, each
writing RUN/metrics/test_TAG.json. Every command is printed, appended to WORK/commands.log and
written to strategies.csv; a finished step (its metrics file) is skipped, so the same command
continues an interrupted table. Then docs/results/strategies.md and strategies.csv: Prec@K,
NDCG@K, BLEU@K, HR@K, MRR@K of each strategy (mean ± std over the seeds), sampled (1000
candidates) and full (all items).

Compute (not measured end to end): the training run is the GPT row of experiments/table3.py on
ml-1m-paper, 5,000 steps; GPT-style runs went at 2-6 steps/s on LastFM on the shared 2-core CPU
(docs/gpt.md), so 15-45 min. Each strategy is one evaluate process on the 2,096 test users (both
scenes): about a minute for top-K, greedy, beam and one sampled list, several for RRA / RA (20
lists a user): about 1-1.5 h a seed in all on that CPU.

The strategies paper's figures: the project's copy of it (../shared/seeds/001_*) is its
repository's README (the commands of each strategy; datasets ML-20M, Yelp, Steam, Gowalla,
Twitch-100k, BeerAdvocate), without its tables, so PAPER is empty and the table says so: no
published figure is set beside ours until someone copies them from the paper with the page.
"""
from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ''):        # run as a script (python experiments/strategies_table.py)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import _runs  # noqa: E402

CONFIG = 'gpt'                  # experiments/configs/gpt.py, its defaults
DATASET = 'ml-1m-paper'
# training overrides (the GPT row of experiments/table3.py on ml-1m-paper)
TRAIN_SETS = (('train_steps', 5000), ('eval_every', 500), ('checkpoint_every', 500))

#  tag            label                                         evaluate arguments
STRATEGIES = (
    ('topk',        'top-K of the next-item scores',              ('--strategy=topk',)),
    ('greedy',      'greedy decoding',                            ('--strategy=greedy',)),
    ('beam5',       'beam search, 5 beams',                       ('--strategy=beam', '--beam=5')),
    ('sample_t0.3', 'temperature sampling, T = 0.3 (one list)',   ('--strategy=sample', '--temperature=0.3')),
    ('sample_t0.5', 'temperature sampling, T = 0.5 (one list)',   ('--strategy=sample', '--temperature=0.5')),
    ('sample_t1.0', 'temperature sampling, T = 1.0 (one list)',   ('--strategy=sample', '--temperature=1.0')),
    ('rra_t0.3',    'multi-sequence RRA, 20 lists at T = 0.3',    ('--strategy=multi_rra', '--temperature=0.3',
                                                                   '--num-sequences=20')),
    ('ra_t0.3',     'multi-sequence RA, 20 lists at T = 0.3',     ('--strategy=multi_ra', '--temperature=0.3',
                                                                   '--num-sequences=20')),
    ('rra_t1.0',    'multi-sequence RRA, 20 lists at T = 1.0',    ('--strategy=multi_rra', '--temperature=1.0',
                                                                   '--num-sequences=20')),
)
METRICS = ('prec', 'ndcg', 'bleu', 'hr', 'mrr')
METRIC_NAME = {'prec': 'Prec', 'ndcg': 'NDCG', 'bleu': 'BLEU', 'hr': 'HR', 'mrr': 'MRR'}
SCENES = ('sampled', 'full')

# The strategies paper's figures on the same metric and data, {tag: {(scene, metric): value}}:
# none (see the module docstring: the project's copy of the paper holds no table).
PAPER: dict = {}
PAPER_NOTE = ('The strategies paper (Volodkevich et al., arXiv:2409.17730) reports no figure '
              'beside these: the project\'s copy of it (../shared/seeds/001_*) is its repository '
              'README, with the commands of each strategy but no table, and its README names other '
              'datasets (ML-20M, Yelp, Steam, Gowalla, Twitch-100k, BeerAdvocate); the "paper" '
              'column stays empty until its figures are copied into PAPER with their page.')


def train_command(args, dataset: str, seed: int, overrides) -> list[str]:
    sets = {'data_dir': os.path.join(args.data_root, dataset), 'seed': seed}
    sets.update(TRAIN_SETS)
    if args.steps:
        sets['train_steps'] = args.steps
    for key, value in _runs.overrides_for(overrides, CONFIG, dataset):
        sets[key] = value
    wd = os.path.join(args.work_root, CONFIG, dataset, f'seed{seed}')
    return _runs.main_command(CONFIG, '', wd, sets.items())


def eval_command(workdir: str, tag: str, seed: int) -> list[str]:
    extra = dict((t, a) for t, _, a in STRATEGIES)[tag]
    return _runs.evaluate_command(workdir, tag, list(extra) + ['--splits=test', f'--seed={seed}'])


def _metric(res: dict, scene: str, name: str):
    key = next(k for k in res[scene] if k.startswith(name + '@'))
    return res[scene][key]


def collect(args, dataset, seeds, tags, overrides) -> list[dict]:
    record = os.path.join(args.work_root, 'commands.log')
    results = {}
    for seed in seeds:
        cmd = train_command(args, dataset, seed, overrides)
        wd = _runs.workdir_of(cmd)
        trained = _runs.ensure_run(cmd, lambda: _runs.read_result(wd), args, record=record)
        for tag in tags:
            ecmd = eval_command(wd, tag, seed)
            if trained is None and not args.dry_run:
                continue            # the training run failed or is not collected: nothing to decode
            results[tag, seed] = _runs.ensure_run(
                ecmd, lambda tag=tag: _runs.read_result(wd, tag), args, record=record,
                log_name=f'evaluate_{tag}.log')
    out = []
    labels = {t: label for t, label, _ in STRATEGIES}
    wd0 = _runs.workdir_of(train_command(args, dataset, seeds[0], overrides))
    for tag in tags:
        done = [(s, results.get((tag, s))) for s in seeds]
        done = [(s, r) for s, r in done if r is not None]
        for scene in SCENES:
            rec = dict(strategy=tag, label=labels[tag], dataset=dataset, scene=scene, seeds=len(done),
                       seeds_done=' '.join(str(s) for s, _ in done),
                       k=int(next(k for k in done[0][1][scene] if k.startswith('prec@')).split('@')[1])
                       if done else '',
                       train_command=_runs.shown(train_command(args, dataset, seeds[0], overrides), True),
                       command=_runs.shown(eval_command(wd0, tag, seeds[0]), True))
            for m in METRICS:
                vals = [_metric(r, scene, m) for _, r in done]
                rec[f'{m}_mean'], rec[f'{m}_std'] = _runs.mean_std(vals)
                rec[f'{m}_text'] = _runs.fmt(vals)
                rec[f'paper_{m}'] = PAPER.get(tag, {}).get((scene, m), '')
            out.append(rec)
    return out


def write_tables(table, args, argv, dataset, seeds) -> None:
    fields = ['strategy', 'label', 'dataset', 'scene', 'k', 'seeds', 'seeds_done']
    for m in METRICS:
        fields += [f'{m}_mean', f'{m}_std', f'paper_{m}']
    fields += ['command', 'train_command']
    _runs.write_csv(os.path.join(args.out_dir, 'strategies.csv'), fields, table)
    k = next((r['k'] for r in table if r['k'] != ''), 'K')
    lines = ['# Generation strategies on one GPT-style model', '',
             f'Made by `{_runs.made_by("experiments.strategies_table", argv)}`; {dataset}, paper protocol, '
             f'K = {k}; seeds {",".join(map(str, seeds))} (one trained model a seed, every strategy '
             'decoding its kept parameters; mean ± sample std over the seeds). Per-run commands: '
             'strategies.csv.', '', PAPER_NOTE, '']
    scene_name = {'sampled': 'sampled candidates (1000 on the paper protocol)', 'full': 'all items'}
    for scene in SCENES:
        recs = [r for r in table if r['scene'] == scene and r['seeds']]
        if not recs:
            continue
        lines += [f'## {scene_name[scene]}', '',
                  '| strategy | seeds | ' + ' | '.join(f'{METRIC_NAME[m]}@{k}' for m in METRICS) + ' | paper |',
                  '|---|---|' + '---|' * len(METRICS) + '---|']
        for r in recs:
            pub = ', '.join(f'{METRIC_NAME[m]} {r[f"paper_{m}"]}' for m in METRICS if r[f'paper_{m}'] != '')
            lines.append(f'| {r["label"]} | {r["seeds"]} | '
                         + ' | '.join(r[f'{m}_text'] + _runs.ratio_text(r[f'{m}_mean'], r[f'paper_{m}'])
                                      for m in METRICS)
                         + f' | {pub or "not reported"} |')
        lines.append('')
    missing = [r['strategy'] for r in table if r['scene'] == 'sampled' and not r['seeds']]
    if missing:
        lines += ['Not run yet (no metrics/test_TAG.json in the work root): ' + ', '.join(missing) + '.', '']
    _runs.write_markdown(args.out_dir, 'strategies', '\n'.join(lines), len(table))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog='strategies: ' + ', '.join(f'{t} ({label})' for t, label, _ in STRATEGIES))
    ap.add_argument('--data-root', required=True, help='folder with one prepared dataset a name')
    ap.add_argument('--work-root', required=True, help='the run goes to WORK/gpt/DATASET/seedS')
    ap.add_argument('--dataset', default=DATASET)
    ap.add_argument('--seeds', default='0')
    ap.add_argument('--strategies', default=','.join(t for t, _, _ in STRATEGIES))
    ap.add_argument('--steps', type=int, default=0, help='train_steps of the model (0: TRAIN_SETS)')
    ap.add_argument('--set', action='append', default=[], metavar='[gpt[@DATASET]:]KEY=VALUE',
                    help='a config override of the training run, e.g. model_kwargs.dropout_rate=0.2')
    _runs.add_output_args(ap, 'steps')
    args = ap.parse_args(argv)
    seeds = _runs.seeds_arg(args.seeds)
    tags = _runs.list_arg(args.strategies)
    known = [t for t, _, _ in STRATEGIES]
    bad = [t for t in tags if t not in known]
    if bad:
        ap.error(f'unknown strategies {bad} (known: {", ".join(known)})')
    if not seeds or not tags:
        ap.error('--seeds and --strategies need at least one value each')
    if not (args.dry_run or args.collect_only) and not os.path.isdir(os.path.join(args.data_root, args.dataset)):
        ap.error(f'{os.path.join(args.data_root, args.dataset)} is not a prepared dataset folder')
    sets = [s if ':' in s.split('=', 1)[0] else f'{CONFIG}:{s}' for s in args.set]
    overrides = _runs.parse_sets(sets, ap.error, forbid_star_steps=False)
    _runs.refuse_narrowing(args, 'strategies', ('strategy', 'dataset', 'scene'),
                           [(t, args.dataset, sc) for t in tags for sc in SCENES], len(seeds), ap.error)
    table = collect(args, args.dataset, seeds, tags, overrides)
    if args.dry_run:
        return 0
    write_tables(table, args, argv, args.dataset, seeds)
    return _runs.failure_status(args)


if __name__ == '__main__':
    sys.exit(main())
