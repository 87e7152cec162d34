"""SeqGAN's synthetic test (its Table 1) on the built-in oracle data: MLE vs SeqGAN vs SSRGAN
(AOS4Rec's adversarial phase) with the same generator, NLL_oracle of the generated lists.

  python -m experiments.oracle_nll_table --work-root /work/runs/oracle_nll \
      [--seeds 0,1,2] [--rows mle,seqgan,ssrgan] [--steps P,C,G] [--set [ROW:]KEY=VALUE ...]
      [--out-dir docs/results] [--collect-only] [--dry-run]

The full table (3 rows x 3 seeds, one run at a time):

  python -m experiments.oracle_nll_table --work-root /work/runs/oracle_nll --seeds 0,1,2

The data: the `:quick` synthetic oracle data (a random LSTM oracle, 5,000 users of 50 items over
500 tokens; docs/protocol.md section 7), generated once by the first run into WORK/data and
shared by every run (config.synthetic.cache_dir). The generator of every row: the `:quick`
Transformer seq2seq network (embedding 64, 2 layers, feed-forward 256), kept by validation
NLL_oracle (config.select_by, the `:quick` rule). Per seed S (folders WORK/seedS/ROW, the layout
of experiments/collect_synthetic.py, so `python -m experiments.collect_synthetic --root WORK`
still reads the base and adver rows):

  mle     base    aos4rec.py:quick,base   P MLE steps
  seqgan  seqgan  seqgan.py:quick         train_steps=0, seqgan.init_from=WORK/seedS/base:
                                          C discriminator steps, G REINFORCE rounds (N = 16
                                          roll-outs) from mle's generator
  ssrgan  adver   aos4rec.py:quick,adver  train_steps=0, aos4rec.init_from=WORK/seedS/base:
                                          C critic steps, G SSRGAN rounds from mle's generator
So both adversarial rows start from exactly the generator the mle row kept, and the MLE run is
not repeated (a row whose mle run has not finished is skipped and said so).
  then, per run: python -m aos4rec_jax.evaluate --workdir=RUN --tag=sample --strategy=sample
  --temperature=1.0 --splits=test --seed=S (ancestral sampling: SeqGAN's measure).

Every command is printed, appended to WORK/commands.log and written to oracle_nll.csv; a finished
step (its metrics file) is skipped, so the same command continues an interrupted table. Then
docs/results/oracle_nll.md and oracle_nll.csv: NLL_oracle (nats per K-item list, and per item)
of the sampled lists and of the beam-5 lists (test users, all items), mean ± std over the seeds,
each row's ratio to MLE's, beside SeqGAN's Table 1.

Compute (not measured end to end): the `:quick` MLE run took 9 min 56 s for 2,000 steps on the
2-core CPU (README), once a seed (both adversarial rows start from it); an SSRGAN round costs
10.5-11.7 MLE steps and a critic update about 2 (README, "Benchmarks"), so 200 + 200 add 15-25
min; a SeqGAN round with 16 roll-outs and the default discriminator took over 18 s on the
YOOCHOOSE sample (docs/seqgan.md), so 200 rounds about an hour or more. About 1.3-1.8
CPU-hours a seed, 4-5.5 for the three seeds.
"""
from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ''):        # run as a script (python experiments/oracle_nll_table.py)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import _runs  # noqa: E402

#  row       label                                      folder    config     variant        paper
ROWS = {
    'mle':    ('MLE (seq2seq Transformer)',             'base',   'aos4rec', 'quick,base',  'MLE'),
    'seqgan': ('SeqGAN (REINFORCE, CNN discriminator)', 'seqgan', 'seqgan',  'quick',       'SeqGAN'),
    'ssrgan': ('SSRGAN (AOS4Rec adversarial, from MLE)', 'adver', 'aos4rec', 'quick,adver', None),
}
DEFAULT_STEPS = (2000, 200, 200)

# SeqGAN (Yu et al., AAAI-17), Table 1 (../shared/seeds/003_*): NLL_oracle of 100,000 sequences
# sampled from each policy (Eq. 13). Their oracle: a random LSTM (hidden 32, N(0, 1)) drawing
# 10,000 unconditional sequences of length 20 (Eq. 13 writes a sum over the T tokens; the scale
# of the figures, Random 10.31, reads as nats per token).
PAPER = {'Random': 10.310, 'MLE': 9.038, 'SS': 8.985, 'PG-BLEU': 8.946, 'SeqGAN': 8.736}
PAPER_NOTE = ('SeqGAN\'s oracle is not ours: it draws unconditional sequences of 20 tokens and its '
              'figures are per token (the scale of its "Random" 10.31), while ours continues each '
              'user\'s history with K items over 500 tokens and NLL_oracle here is summed over the '
              'list (also shown per item). Compare directions and ratios to MLE, not values.')


def run_dir(args, row: str, seed: int) -> str:
    return os.path.join(args.work_root, f'seed{seed}', ROWS[row][1])


def train_command(args, row: str, seed: int, overrides) -> list[str]:
    _, _, config, variant, _ = ROWS[row]
    p, c, g = args.steps
    sets = {'seed': seed, 'synthetic.cache_dir': os.path.join(args.work_root, 'data')}
    if row == 'mle':
        sets['train_steps'] = p
    elif row == 'seqgan':
        sets.update({'train_steps': 0, 'seqgan.init_from': run_dir(args, 'mle', seed),
                     'seqgan.d_pretrain_steps': c, 'seqgan.gan_steps': g})
    else:
        sets.update({'train_steps': 0, 'aos4rec.init_from': run_dir(args, 'mle', seed),
                     'aos4rec.critic_pretrain_steps': c, 'aos4rec.gan_steps': g})
    for key, value in _runs.overrides_for(overrides, row, 'synthetic'):
        sets[key] = value
    return _runs.main_command(config, variant, run_dir(args, row, seed), sets.items())


def sample_command(args, row: str, seed: int) -> list[str]:
    return _runs.evaluate_command(run_dir(args, row, seed), 'sample',
                                  ['--strategy=sample', '--temperature=1.0', '--splits=test', f'--seed={seed}'])


def collect(args, rows, seeds, overrides) -> list[dict]:
    record = os.path.join(args.work_root, 'commands.log')
    res = {}
    order = [r for r in ('mle', 'seqgan', 'ssrgan') if r in rows]
    for seed in seeds:
        for row in order:
            if row != 'mle' and _runs.read_result(run_dir(args, 'mle', seed)) is None and not args.dry_run:
                if not args.collect_only:
                    print(f'skipped {row} seed {seed}: the mle run it starts from is not finished', flush=True)
                continue
            cmd = train_command(args, row, seed, overrides)
            wd = run_dir(args, row, seed)
            trained = _runs.ensure_run(cmd, lambda: _runs.read_result(wd), args, record=record)
            if trained is None and not args.dry_run:
                continue
            sampled = _runs.ensure_run(sample_command(args, row, seed),
                                       lambda: _runs.read_result(wd, 'sample'), args, record=record,
                                       log_name='evaluate_sample.log')
            res[row, seed] = (trained, sampled)
    out = []
    for row in rows:
        label, folder, config, variant, paper = ROWS[row]
        beam = [(s, t) for s in seeds for t in [res.get((row, s), (None, None))[0]] if t is not None]
        samp = [(s, x) for s in seeds for x in [res.get((row, s), (None, None))[1]] if x is not None]
        k = int(next(k for k in beam[0][1]['sampled'] if k.startswith('prec@')).split('@')[1]) if beam else ''
        cols = {
            'sample_full': [x['nll_oracle']['full'] for _, x in samp],
            'beam_full': [t['nll_oracle']['full'] for _, t in beam],
            'beam_sampled': [t['nll_oracle']['sampled'] for _, t in beam],
            'target': [t['nll_oracle']['target'] for _, t in beam],
        }
        rec = dict(row=row, label=label, config=f'{config}.py:{variant}', folder=folder, k=k,
                   seeds=len(samp), seeds_done=' '.join(str(s) for s, _ in samp),
                   paper_name=paper or '', paper_nll=PAPER.get(paper, '') if paper else '',
                   command=_runs.shown(train_command(args, row, seeds[0], overrides), True),
                   sample_command=_runs.shown(sample_command(args, row, seeds[0]), True))
        for name, vals in cols.items():
            rec[f'{name}_mean'], rec[f'{name}_std'] = _runs.mean_std(vals)
            rec[f'{name}_text'] = _runs.fmt(vals, 2)
            rec[f'{name}_item_text'] = _runs.fmt([v / k for v in vals], 3) if k else 'n/a'
        out.append(rec)
    mle = next((r for r in out if r['row'] == 'mle'), None)
    for r in out:
        r['ratio_to_mle'] = (round(r['sample_full_mean'] / mle['sample_full_mean'], 4)
                             if mle and mle['sample_full_mean'] != '' and r['sample_full_mean'] != '' else '')
        r['paper_ratio_to_mle'] = round(r['paper_nll'] / PAPER['MLE'], 4) if r['paper_nll'] != '' else ''
    return out


def write_tables(table, args, argv, seeds) -> None:
    fields = ['row', 'label', 'config', 'folder', 'k', 'seeds', 'seeds_done',
              'sample_full_mean', 'sample_full_std', 'beam_full_mean', 'beam_full_std',
              'beam_sampled_mean', 'beam_sampled_std', 'target_mean', 'ratio_to_mle',
              'paper_name', 'paper_nll', 'paper_ratio_to_mle', 'command', 'sample_command']
    _runs.write_csv(os.path.join(args.out_dir, 'oracle_nll.csv'), fields, table)
    k = next((r['k'] for r in table if r['k'] != ''), 'K')
    p, c, g = args.steps
    lines = ['# NLL_oracle on the synthetic oracle data: MLE, SeqGAN, SSRGAN', '',
             f'Made by `{_runs.made_by("experiments.oracle_nll_table", argv)}`; seeds '
             f'{",".join(map(str, seeds))}; mean ± sample std over the seeds; test users, lists over '
             f'all items; lower is better. Schedule: {p} MLE steps, {c} discriminator / critic steps, '
             f'{g} adversarial rounds. Sampling: ancestral sampling at temperature 1 '
             '(`evaluate --strategy sample`, SeqGAN\'s measure); beam: the beam-5 lists of the '
             'runs\' metrics/test.json. Per-run commands: oracle_nll.csv.', '',
             f'| row | seeds | NLL_oracle, sampling (per {k}-item list) | per item | ratio to MLE | '
             f'NLL_oracle, beam 5 (per list) | SeqGAN Table 1 (per token) | its ratio to MLE |',
             '|---|---|---|---|---|---|---|---|']
    for r in table:
        if not r['seeds'] and r['beam_full_text'] == 'n/a':
            continue
        lines.append(f'| {r["label"]} | {r["seeds"]} | {r["sample_full_text"]} | {r["sample_full_item_text"]} | '
                     f'{r["ratio_to_mle"] if r["ratio_to_mle"] != "" else "-"} | {r["beam_full_text"]} | '
                     f'{r["paper_nll"] if r["paper_nll"] != "" else "-"} | '
                     f'{r["paper_ratio_to_mle"] if r["paper_ratio_to_mle"] != "" else "-"} |')
    tgt = [v for r in table for v in ([r['target_mean']] if r['target_mean'] != '' else [])]
    lines += ['']
    if tgt:
        lines += [f'NLL_oracle of the true test continuations: {tgt[0]:.2f} per list.', '']
    lines += [PAPER_NOTE + ' SeqGAN Table 1 also has Random 10.310, SS 8.985, PG-BLEU 8.946.', '']
    missing = [r['row'] for r in table if not r['seeds']]
    if missing:
        lines += ['Not run yet (no finished run with its sampling evaluation in the work root): '
                  + ', '.join(missing) + '.', '']
    _runs.write_markdown(args.out_dir, 'oracle_nll', '\n'.join(lines), len(table))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--work-root', required=True, help='runs go to WORK/seedS/{base,seqgan,adver}, data to WORK/data')
    ap.add_argument('--rows', default=','.join(ROWS), help='mle, seqgan, ssrgan (seqgan and ssrgan need mle)')
    ap.add_argument('--seeds', default='0,1,2')
    ap.add_argument('--steps', default=','.join(map(str, DEFAULT_STEPS)), metavar='P,C,G',
                    help='MLE steps, discriminator/critic pretraining steps, adversarial rounds')
    ap.add_argument('--set', action='append', default=[], metavar='[ROW:]KEY=VALUE',
                    help='a config override of every run (or of one row), e.g. max_eval_users=300')
    _runs.add_output_args(ap, 'steps')
    args = ap.parse_args(argv)
    rows = _runs.list_arg(args.rows)
    seeds = _runs.seeds_arg(args.seeds)
    bad = [r for r in rows if r not in ROWS]
    if bad:
        ap.error(f'unknown rows {bad} (known: {", ".join(ROWS)})')
    needs_mle = [r for r in rows if r != 'mle']
    if needs_mle and 'mle' not in rows:
        ap.error(f'--rows: {" and ".join(needs_mle)} start{"s" if len(needs_mle) == 1 else ""} '
                 'from the mle run: name mle too')
    if not rows or not seeds:
        ap.error('--rows and --seeds need at least one value each')
    try:
        args.steps = tuple(int(x) for x in args.steps.split(','))
        assert len(args.steps) == 3
    except (ValueError, AssertionError):
        ap.error(f'--steps {args.steps!r}: expected P,C,G (three integers)')
    sets = [s if ':' in s.split('=', 1)[0] else f'*:{s}' for s in args.set]
    overrides = _runs.parse_sets(sets, ap.error, forbid_star_steps=False)
    _runs.refuse_narrowing(args, 'oracle_nll', ('row',), [(r,) for r in rows], len(seeds), ap.error)
    table = collect(args, rows, seeds, overrides)
    if args.dry_run:
        return 0
    write_tables(table, args, argv, seeds)
    return _runs.failure_status(args)


if __name__ == '__main__':
    sys.exit(main())
