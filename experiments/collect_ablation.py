"""Collects the AOS4Rec ablation runs (paper Table 4) into Markdown tables, a JSON and a plot.

  python -m experiments.collect_ablation --root runs/ablation --out docs/results [--split test]

Input layout: ROOT/<dataset>/<model>/seed<S>/<row>/metrics/<split>.json, with model e.g.
transformer or gru and row one of base, oracle, adver, both (see experiments/configs/aos4rec.py).
The both folder may also hold metrics/<split>_beam1.json (the same run decoded with beam 1,
`python -m aos4rec_jax.evaluate --tag beam1 --strategy greedy`): that is the row both_beam1.
Missing folders or files are skipped; their cells read "n/a", and a cell with fewer seeds than
the dataset has says how many it has, e.g. "0.3010 ± 0.0040 (2 seeds)".

Writes, each through a temporary file and os.replace:
  OUT/ablation_<dataset>.md  sampled and full protocol tables (Prec@K, NDCG@K, BLEU@K as mean ±
                             sample std over seeds), the schedule the runs used (their
                             config.json), the NDCG@K change of each row vs base, the paired
                             per-seed NDCG@K difference vs base (mean ± std, seeds up), and, for
                             the adversarial rows, what the critic learned and what the generator
                             did with it (critic_report);
  OUT/ablation.json          the aggregate: dataset -> protocol -> model -> row -> metric ->
                             {mean, std, n, values, seeds} (std is null for a single seed; the
                             metric 'users' is the number of evaluated users);
  OUT/ablation.png           mean NDCG@K with std error bars, one subplot per (dataset, protocol).
Exits with 2 when no run is found under ROOT, and, unless --replace, when OUT/ablation.json
holds runs (dataset/model/row/seed) that ROOT lacks: writing there would drop their results
(their run folders deleted or lost with a machine, or a narrower --root).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys

ROWS = ('base', 'oracle', 'adver', 'both', 'both_beam1')
ROW_LABELS = {
    'base': 'AOS4Rec-base (seq2seq, MLE)',
    'oracle': '+Oracle',
    'adver': '+Adver.',
    'both': '+both (AOS4Rec)',
    'both_beam1': '+both, beam 1',
}
PROTOCOLS = ('sampled', 'full')
MODEL_ORDER = ('transformer', 'gru')
MODEL_LABELS = {'transformer': 'Transformer', 'gru': 'GRU'}
TABLE_METRICS = (('prec', 'Prec'), ('ndcg', 'NDCG'), ('bleu', 'BLEU'))
SEED_RE = re.compile(r'^seed(\d+)$')


def _subdirs(path: str) -> list[str]:
    """Names of the sub-folders of path, sorted; [] when path is not a folder."""
    if not os.path.isdir(path):
        return []
    return sorted(n for n in os.listdir(path) if os.path.isdir(os.path.join(path, n)))


def _load(path: str) -> dict | None:
    """The metrics JSON at path, or None when it is absent or unreadable (with a warning)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f'warning: skipping {path}: {e}', file=sys.stderr)
        return None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _stats(values: list[float], seeds: list[int]) -> dict:
    """{mean, std, n, values, seeds}; std is the sample std (ddof=1), None for one value."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {'mean': mean, 'std': std, 'n': n, 'values': list(values), 'seeds': list(seeds)}


def _model_key(model: str):
    return (MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER), model)


def _seed_dirs(root: str):
    """Yields (dataset, model, seed, folder) for every ROOT/<dataset>/<model>/seed<S> folder, in
    the tables' order: datasets sorted, models transformer, gru, then the rest, seeds ascending."""
    for dataset in _subdirs(root):
        for model in sorted(_subdirs(os.path.join(root, dataset)), key=_model_key):
            seeds = []
            for name in _subdirs(os.path.join(root, dataset, model)):
                m = SEED_RE.match(name)
                if m:
                    seeds.append((int(m.group(1)), name))
            for seed, name in sorted(seeds):
                yield dataset, model, seed, os.path.join(root, dataset, model, name)


def find_runs(root: str, split: str = 'test'):
    """Yields (dataset, model, seed, row, metrics dict) for every metrics file found under root."""
    for dataset, model, seed, sdir in _seed_dirs(root):
        for row in ROWS:
            folder, fname = ('both', f'{split}_beam1.json') if row == 'both_beam1' else (row, f'{split}.json')
            metrics = _load(os.path.join(sdir, folder, 'metrics', fname))
            if metrics is not None:
                yield dataset, model, seed, row, metrics


def collect(root: str, split: str = 'test') -> dict:
    """Aggregates the runs under root: dataset -> protocol -> model -> row -> metric -> stats.

    stats is {mean, std, n, values, seeds} over the seeds found (values in seed order). Every
    numeric entry of a protocol's dict is a metric (prec@K, ndcg@K, bleu@K, hr@K, mrr@K), plus
    'users', the top-level users count of the metrics file. Orders are deterministic: datasets
    sorted, protocols sampled then full, models transformer then gru then the rest, rows as ROWS.
    """
    raw: dict = {}
    for dataset, model, seed, row, metrics in find_runs(root, split):
        for protocol in PROTOCOLS:
            block = metrics.get(protocol)
            if not isinstance(block, dict):
                continue
            cell = raw.setdefault(dataset, {}).setdefault(protocol, {}).setdefault(model, {}).setdefault(row, {})
            entries = [(k, v) for k, v in block.items() if _is_number(v)]
            if _is_number(metrics.get('users')):
                entries.append(('users', metrics['users']))
            for k, v in entries:
                cell.setdefault(k, []).append((seed, float(v) if k != 'users' else v))
    agg: dict = {}
    for dataset in sorted(raw):
        for protocol in PROTOCOLS:
            if protocol not in raw[dataset]:
                continue
            models = raw[dataset][protocol]
            for model in sorted(models, key=_model_key):
                for row in ROWS:
                    if row not in models[model]:
                        continue
                    out = agg.setdefault(dataset, {}).setdefault(protocol, {}).setdefault(model, {}).setdefault(row, {})
                    for metric in sorted(models[model][row]):
                        pairs = models[model][row][metric]
                        out[metric] = _stats([v for _, v in pairs], [s for s, _ in pairs])
    return agg


def _iter_cells(dagg: dict):
    """Yields the metric dicts of every (protocol, model, row) of one dataset's aggregate."""
    for protocol in dagg.values():
        for model in protocol.values():
            yield from model.values()


def dataset_k(dagg: dict) -> str:
    """The K of a dataset, read from its 'prec@K' metric names ('?' when there is none)."""
    for cell in _iter_cells(dagg):
        for metric in sorted(cell):
            if metric.startswith('prec@'):
                return metric.split('@', 1)[1]
    return '?'


def dataset_seeds(dagg: dict) -> list[int]:
    """Every seed that has at least one run in the dataset, sorted."""
    return sorted({s for cell in _iter_cells(dagg) for st in cell.values() for s in st['seeds']})


def dataset_models(dagg: dict) -> list[str]:
    """The models of a dataset: transformer and gru always (so missing ones show n/a), then others."""
    found = {m for protocol in dagg.values() for m in protocol}
    return sorted(found | set(MODEL_ORDER), key=_model_key)


def _get(dagg: dict, protocol: str, model: str, row: str, metric: str) -> dict | None:
    return dagg.get(protocol, {}).get(model, {}).get(row, {}).get(metric)


def format_cell(st: dict | None, n_seeds: int) -> str:
    """'mean ± std' with 4 decimals (just the mean for one seed), '(n seeds)' when seeds are missing."""
    if st is None:
        return 'n/a'
    text = f"{st['mean']:.4f}" if st['std'] is None else f"{st['mean']:.4f} ± {st['std']:.4f}"
    if st['n'] < n_seeds:
        text += f" ({st['n']} seed{'s' if st['n'] != 1 else ''})"
    return text


def format_change(st: dict | None, base: dict | None) -> str:
    """The change of st's mean vs base's mean in percent, e.g. '+1.2%'; 'n/a' when undefined.
    Both means are taken over the seeds the two have in common, so a row with fewer seeds is not
    compared with other seeds' base runs; '(n common seeds)' says when that left some out."""
    pairs = _seed_pairs(st, base)
    if not pairs:
        return 'n/a'
    b_mean = sum(b for _, b in pairs) / len(pairs)
    if b_mean == 0:
        return 'n/a'
    pct = 100.0 * (sum(r for r, _ in pairs) / len(pairs) / b_mean - 1.0)
    text = f'{pct:+.1f}%'
    text = '+0.0%' if text == '-0.0%' else text
    if len(pairs) < max(st['n'], base['n']):
        text += f" ({len(pairs)} common seed{'s' if len(pairs) != 1 else ''})"
    return text


def _model_label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def render_dataset(dataset: str, dagg: dict, split: str = 'test', schedule: dict | None = None,
                   critic: dict | None = None) -> str:
    """The Markdown page of one dataset (deterministic: same aggregate, same bytes)."""
    K = dataset_k(dagg)
    seeds = dataset_seeds(dagg)
    models = dataset_models(dagg)
    users = sorted({v for cell in _iter_cells(dagg) if 'users' in cell for v in cell['users']['values']})
    lines = [f'# AOS4Rec ablation (paper Table 4): {dataset}', '',
             f"Split: {split}. Seeds found: {', '.join(map(str, seeds)) or 'none'} ({len(seeds)}). "
             f"Users: {', '.join(str(u) for u in users) or 'n/a'}.", '',
             (f'Cells: mean ± sample std over seeds; "(n seeds)" when a cell has fewer than {len(seeds)}.'
              if len(seeds) > 1 else 'Cells: one seed, so no spread is shown.')]
    head = '| row | ' + ' | '.join(f'{_model_label(m)} {label}@{K}' for m in models for _, label in TABLE_METRICS) + ' |'
    rule = '|---|' + '---|' * (len(models) * len(TABLE_METRICS))
    for protocol in PROTOCOLS:
        lines += ['', f'## {protocol.capitalize()} protocol', '', head, rule]
        for row in ROWS:
            cells = [format_cell(_get(dagg, protocol, m, row, f'{name}@{K}'), len(seeds))
                     for m in models for name, _ in TABLE_METRICS]
            lines.append(f'| {ROW_LABELS[row]} | ' + ' | '.join(cells) + ' |')
    sched = schedule_line(schedule)
    if sched:
        lines += ['', sched]
    lines += ['', f'## NDCG@{K} change vs AOS4Rec-base', '']
    lines += _vs_base_table(dagg, K, models, format_change)
    if len(seeds) > 1:
        lines += ['', f'## Paired NDCG@{K} difference vs AOS4Rec-base, seed by seed', '',
                  'Each seed\'s row minus the same seed\'s base (+Adver. starts from that very base run, '
                  '+both from that seed\'s +Oracle run): mean ± sample std over seeds, then how many '
                  'seeds went up.', '']
        lines += _vs_base_table(dagg, K, models, format_paired)
    lines += render_critic_report(critic or {})
    return '\n'.join(lines) + '\n'


def _vs_base_table(dagg: dict, K: str, models: list[str], fmt) -> list[str]:
    """Header, rule and one line per row after base: fmt(row's NDCG@K stats, base's) per model and
    protocol."""
    lines = ['| row | ' + ' | '.join(f'{_model_label(m)} {p}' for m in models for p in PROTOCOLS) + ' |',
             '|---|' + '---|' * (len(models) * len(PROTOCOLS))]
    for row in ROWS[1:]:
        cells = [fmt(_get(dagg, p, m, row, f'ndcg@{K}'), _get(dagg, p, m, 'base', f'ndcg@{K}'))
                 for m in models for p in PROTOCOLS]
        lines.append(f'| {ROW_LABELS[row]} | ' + ' | '.join(cells) + ' |')
    return lines


def _seed_pairs(st: dict | None, base: dict | None) -> list[tuple[float, float]]:
    """(row value, base value) for every seed that both have, in the row's seed order."""
    if st is None or base is None:
        return []
    b = dict(zip(base['seeds'], base['values']))
    return [(v, b[s]) for s, v in zip(st['seeds'], st['values']) if s in b]


def paired_differences(st: dict | None, base: dict | None) -> list[float]:
    """row - base for every seed that both have (in seed order)."""
    return [r - b for r, b in _seed_pairs(st, base)]


def format_paired(st: dict | None, base: dict | None) -> str:
    """'+0.0012 ± 0.0030 (2/3 up)': the mean and sample std of the per-seed differences."""
    d = paired_differences(st, base)
    if not d:
        return 'n/a'
    ds = _stats(d, [])
    text = f"{ds['mean']:+.4f}" + ('' if ds['std'] is None else f" ± {ds['std']:.4f}")
    return text + f' ({sum(x > 0 for x in d)}/{len(d)} up)'


def collect_schedules(root: str) -> dict:
    """dataset -> model -> set of schedule descriptions, read from the runs' config.json files.

    A description is 'P seq2seq steps (batch B, width W, N layer(s))' for the base and oracle
    rows and 'C critic + G SSRGAN rounds (g-steps g, d-steps d, lipschitz X)' for the adversarial
    rows, so a table says what its runs were; runs without a config.json are left out."""
    out: dict = {}
    for dataset, model, _, sdir in _seed_dirs(root):
        for row in ('base', 'oracle', 'adver', 'both'):
            cfg = _load(os.path.join(sdir, row, 'config.json'))
            if not cfg:
                continue
            a, mk = cfg.get('aos4rec', {}), cfg.get('model_kwargs', {})
            held = float(a.get('critic_holdout', 0.0) or 0.0)
            patience = int(cfg.get('early_stop_patience', 0) or 0)
            if row in ('base', 'oracle'):
                width = mk.get('embed_dim') if model != 'gru' else mk.get('hidden_dim')
                text = (f"{'at most ' if patience else ''}{cfg.get('train_steps')} seq2seq steps "
                        f"(batch {cfg.get('batch_size')}, width {width}, {mk.get('num_layers')} layer(s)"
                        + (f', early stop after {patience} validations without a gain' if patience else '')
                        + (f', the users held out for the critic ({held:g}) left out' if held else '')
                        + ')')
            else:
                extra = ''
                if 'd_learning_rate' in a:
                    extra += f", critic lr {a['d_learning_rate']:g}, gp {a.get('gp_weight'):g}"
                if a.get('critic_init', 'random') != 'random':
                    extra += f", critic from the {a['critic_init']}"
                if a.get('critic_frozen'):
                    extra += f", critic's {a['critic_frozen']} frozen"
                if held:
                    extra += f', critic and SSRGAN on held-out users ({held:g})'
                if patience:
                    extra += f', early stop after {patience} validations without a gain'
                if a.get('gan_start_competes'):
                    extra += ', the starting generator competes in selection'
                text = (f"{'at most ' if a.get('critic_patience') else ''}"
                        f"{a.get('critic_pretrain_steps')} critic pretraining steps + "
                        f"{'at most ' if patience else ''}"
                        f"{a.get('gan_steps')} SSRGAN rounds (g-steps {a.get('g_steps')}, "
                        f"d-steps {a.get('d_steps')}, lipschitz {a.get('lipschitz')}{extra})")
            out.setdefault(dataset, {}).setdefault(model, set()).add(text)
    return out


def _jsonl(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def critic_report(root: str) -> dict:
    """dataset -> model -> row ('adver', 'both') -> [per-seed dict]: what the critic learned and
    what the generator did with it, read from each adversarial run's metrics/ (critic_pretraining
    .json, train.jsonl, summary.json) and config.json. Runs without critic_pretraining.json are
    left out. Keys: seed, critic_steps, stopped_by_rule, critic_auc (held-out val_auc at the end of
    critic pretraining; val_auc_paired where the run's aos4rec.critic_auc is 'paired', and then
    critic_auc_paired is True), auc_nll (the generator's own-NLL judge then, None in older runs), rounds
    (SSRGAN rounds run), gan_auc and gan_wasserstein (the last SSRGAN measurement), nll_first and
    nll_last (the generated lists' NLL at the first and last SSRGAN log line), kept_step,
    kept_in_gan (the kept parameters come from an SSRGAN round), distinct (share of users with a
    list of their own over all items, test)."""
    out: dict = {}
    for dataset, model, seed, sdir in _seed_dirs(root):
        for row in ('adver', 'both'):
            rdir = os.path.join(sdir, row)
            cp = _load(os.path.join(rdir, 'metrics', 'critic_pretraining.json'))
            cfg = _load(os.path.join(rdir, 'config.json'))
            if not cp or not cfg:
                continue
            a = cfg.get('aos4rec', {})
            P, C = int(cfg.get('train_steps', 0)), int(a.get('critic_pretrain_steps', 0))
            lines = _jsonl(os.path.join(rdir, 'metrics', 'train.jsonl'))
            crit = [r for r in lines if r.get('phase') == 'critic' and 'val_auc' in r]
            gan = [r for r in lines if r.get('phase') == 'gan']
            gan_sep = [r for r in gan if 'val_auc' in r]
            gan_nll = [r for r in gan if 'sample_nll' in r]
            summ = _load(os.path.join(rdir, 'metrics', 'summary.json')) or {}
            dist = summ.get('distinct_full') or {}
            kept = summ.get('kept_step')
            out.setdefault(dataset, {}).setdefault(model, {}).setdefault(row, []).append(dict(
                seed=seed, critic_steps=cp.get('steps_run'), stopped_by_rule=cp.get('stopped_by_rule'),
                critic_auc=cp.get('val_auc'), critic_auc_paired=(cp.get('auc') == 'val_auc_paired'),
                auc_nll=(crit[-1].get('val_auc_nll') if crit else None),
                rounds=(max(r['step'] for r in gan) - P - C) if gan else 0,
                gan_auc=gan_sep[-1]['val_auc'] if gan_sep else None,
                gan_wasserstein=gan_sep[-1].get('val_wasserstein') if gan_sep else None,
                nll_first=gan_nll[0]['sample_nll'] if gan_nll else None,
                nll_last=gan_nll[-1]['sample_nll'] if gan_nll else None,
                kept_step=kept, kept_in_gan=(kept is not None and kept > P + C),
                distinct=(dist['distinct'] / dist['users']) if dist.get('users') else None))
    return out


def render_critic_report(rep: dict) -> list[str]:
    """Markdown lines of one dataset's critic report (critic_report), [] when there is none."""
    if not rep:
        return []
    f = lambda v, d=4: 'n/a' if v is None else f'{v:.{d}f}'
    lines = ['', '## What the critic learned and what the generator did with it', '',
             'Per seed. Critic AUC: the held-out validation users\' AUC of D(x, y*) vs D(x, y^) at '
             'the end of critic pretraining (0.5: no separation; the bar is 0.7). NLL judge: the AUC '
             'of the generator\'s own per-item NLL on the same lists then (docs/aos4rec.md). SSRGAN: '
             'rounds run, and the last measurement\'s AUC and Wasserstein estimate. Sample NLL: the '
             'generated lists\' per-item NLL under the generator at the first and last SSRGAN log '
             'line. Kept: the step of the kept parameters (an SSRGAN round or the starting '
             'generator). Distinct: share of test users with a list of their own (full protocol).', '',
             '| model | row | seed | critic steps | critic AUC | NLL judge | SSRGAN rounds | '
             'last AUC | last Wasserstein | sample NLL first -> last | kept | distinct |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for model in sorted(rep, key=_model_key):
        for row in ('adver', 'both'):
            for r in rep[model].get(row, []):
                steps = f"{r['critic_steps']}" + (' (rule)' if r['stopped_by_rule'] else '')
                kept = 'n/a' if r['kept_step'] is None else (
                    f"{r['kept_step']} ({'SSRGAN' if r['kept_in_gan'] else 'start'})")
                lines.append(f"| {_model_label(model)} | {ROW_LABELS[row]} | {r['seed']} | {steps} | "
                             f"{f(r['critic_auc'])}{' (paired)' if r.get('critic_auc_paired') else ''} | "
                             f"{f(r['auc_nll'])} | {r['rounds']} | "
                             f"{f(r['gan_auc'])} | {f(r['gan_wasserstein'])} | "
                             f"{f(r['nll_first'], 3)} -> {f(r['nll_last'], 3)} | {kept} | "
                             f"{f(r['distinct'], 3)} |")
    return lines


def schedule_line(sched: dict | None) -> str:
    """'Schedule (...): Transformer: ...; GRU: ...' for one dataset, '' when nothing is known."""
    sched = sched or {}
    parts = []
    for model in sorted(sched, key=_model_key):
        # the seq2seq phase first, then the adversarial phases
        parts.append(f'{_model_label(model)}: ' + ', '.join(sorted(sched[model], key=lambda t: ('critic' in t, t))))
    return ('Schedule (read from the runs\' config.json): ' + '; '.join(parts) + '.') if parts else ''


def _write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with open(path + '.tmp', 'w') as f:
        f.write(text)
    os.replace(path + '.tmp', path)


def write_tables(agg: dict, out_dir: str, split: str = 'test', schedules: dict | None = None,
                 critic: dict | None = None) -> list[str]:
    """Writes OUT/ablation_<dataset>.md for every dataset of agg; returns the paths."""
    paths = []
    for dataset in sorted(agg):
        path = os.path.join(out_dir, f'ablation_{dataset}.md')
        _write_text(path, render_dataset(dataset, agg[dataset], split, (schedules or {}).get(dataset),
                                         (critic or {}).get(dataset)))
        paths.append(path)
    return paths


def write_json(agg: dict, out_dir: str) -> str:
    """Writes OUT/ablation.json (the aggregate as collect returns it); returns the path."""
    path = os.path.join(out_dir, 'ablation.json')
    _write_text(path, json.dumps(agg, indent=2) + '\n')
    return path


def runs_in(agg: dict) -> set:
    """{(dataset, model, row, seed)} of an aggregate (its NDCG@K cells' seeds, either protocol)."""
    out = set()
    for dataset, dagg in agg.items():
        for protocol in PROTOCOLS:
            for model, rows in (dagg.get(protocol) or {}).items():
                for row, metrics in rows.items():
                    for metric, st in metrics.items():
                        if metric.startswith('ndcg@') and isinstance(st, dict):
                            out.update((dataset, model, row, int(s)) for s in st.get('seeds') or ())
    return out


def dropped_runs(agg: dict, out_dir: str) -> list[str]:
    """The runs OUT/ablation.json holds that `agg` lacks ('dataset/model/seedS (rows)'): what
    writing `agg` there would drop from the results (its run folders gone, or another --root)."""
    path = os.path.join(out_dir, 'ablation.json')
    if not os.path.isfile(path):
        return []
    try:
        with open(path) as f:
            old = json.load(f)
    except ValueError:
        return []                          # not an aggregate this script wrote
    if not isinstance(old, dict):
        return []
    lost: dict = {}
    for dataset, model, row, seed in sorted(runs_in(old) - runs_in(agg)):
        lost.setdefault(f'{dataset}/{model}/seed{seed}', []).append(row)
    order = {r: i for i, r in enumerate(ROWS)}
    return [f'{k} ({", ".join(sorted(v, key=lambda r: order.get(r, len(order))))})' for k, v in lost.items()]


def write_plot(agg: dict, out_dir: str) -> str:
    """Writes OUT/ablation.png: a (datasets x protocols) grid of grouped NDCG@K bars; returns the path."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    datasets = sorted(agg)
    fig, axes = plt.subplots(len(datasets), len(PROTOCOLS), figsize=(6.5 * len(PROTOCOLS), 4.0 * len(datasets)),
                             squeeze=False)
    for i, dataset in enumerate(datasets):
        dagg = agg[dataset]
        K = dataset_k(dagg)
        models = dataset_models(dagg)
        width = 0.8 / len(models)
        for j, protocol in enumerate(PROTOCOLS):
            ax = axes[i][j]
            for k, model in enumerate(models):
                xs, heights, errs = [], [], []
                for x, row in enumerate(ROWS):
                    st = _get(dagg, protocol, model, row, f'ndcg@{K}')
                    if st is not None:
                        xs.append(x - 0.4 + width * (k + 0.5))
                        heights.append(st['mean'])
                        errs.append(st['std'] or 0.0)
                ax.bar(xs, heights, width, yerr=errs, capsize=3, label=_model_label(model))
            ax.set_xticks(range(len(ROWS)))
            ax.set_xticklabels([ROW_LABELS[r].replace(' (', '\n(') for r in ROWS], fontsize=8)
            ax.set_ylabel(f'NDCG@{K}')
            ax.set_title(f'{dataset}, {protocol} protocol')
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out_dir, 'ablation.png')
    os.makedirs(out_dir or '.', exist_ok=True)
    fig.savefig(path + '.tmp', format='png', dpi=120)
    plt.close(fig)
    os.replace(path + '.tmp', path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--root', required=True, help='ROOT/<dataset>/<model>/seed<S>/<row>/metrics/')
    ap.add_argument('--out', required=True, help='folder for the tables, ablation.json and ablation.png')
    ap.add_argument('--split', default='test', help='metrics file to read: test or valid')
    ap.add_argument('--replace', action='store_true',
                    help='write the tables even where they drop runs that OUT/ablation.json holds')
    a = ap.parse_args(argv)
    agg = collect(a.root, a.split)
    if not agg:
        print(f'error: no ablation run found under {a.root!r} (expected '
              f'{a.root}/<dataset>/<model>/seed<S>/<row>/metrics/{a.split}.json)', file=sys.stderr)
        return 2
    lost = [] if a.replace else dropped_runs(agg, a.out)
    if lost:
        print(f'error: {os.path.join(a.out, "ablation.json")} holds runs that {a.root} lacks: '
              + ', '.join(lost[:4]) + (f' and {len(lost) - 4} more' if len(lost) > 4 else '')
              + '; collect them too, write elsewhere (--out), or pass --replace', file=sys.stderr)
        return 2
    paths = (write_tables(agg, a.out, a.split, collect_schedules(a.root), critic_report(a.root))
             + [write_json(agg, a.out), write_plot(agg, a.out)])
    for path in paths:
        print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
