"""What a run says when it ends, and what the CLIs on a finished run say about its parameters.

* `finish(config, workdir, ds, method, results)`: the closing summary of `main.py` (called at the
  end of `trainer.train_and_evaluate`): where the results are, which step's parameters were
  evaluated and why, every test metric of both protocols beside PopRec's on the same split
  (computed here, in about a second), on synthetic data the oracle's NLL of the lists beside that
  of the true continuations, and the wall time. Printed, and written to `summary.txt` and
  `metrics/summary.json`. It also draws `plots/training.png` (`plot`).
* `params_line(workdir, config, method, which)`: one line naming the run, the step and the
  parameters that `evaluate` and `recommend` use.
* `decode_warnings(method, given)`: the decoding flags a CLI was given that the run's method does
  not read (`--strategy beam` given to PopRec), each as a warning line.

PopRec is the scale reference of every run: the K most popular training items, the same list for
everyone (less the banned history items).
"""
from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from aos4rec_jax import datasets
from aos4rec_jax import evaluation
from aos4rec_jax import synthetic
from aos4rec_jax.methods import poprec as poprec_method

METRICS = evaluation.METRIC_NAMES
# The decoder fields each strategy reads (decoding.generate); 'strategy' itself is always read
# by a method that decodes.
STRATEGY_FIELDS = {'beam': {'beam_size'}, 'greedy': set(), 'sample': {'temperature'},
                   'gumbel': {'temperature'}, 'multi_rra': {'temperature', 'num_sequences'},
                   'multi_ra': {'temperature', 'num_sequences'}, 'topk': set()}
FLAG_OF_FIELD = {'strategy': '--strategy', 'beam_size': '--beam', 'temperature': '--temperature',
                 'num_sequences': '--num-sequences'}
SELECTION = {'ndcg': 'the best validation sampled NDCG@{k}',
             'full_ndcg': 'the best validation full-protocol NDCG@{k}',
             'nll_oracle': 'the lowest validation NLL_oracle',
             'last': 'the last validation (select_by=last)'}


# ------------------------------------------------------------------------------ kept parameters
def _step_dirs(path: str) -> list[int]:
    if not os.path.isdir(path):
        return []
    return sorted(int(n) for n in os.listdir(path) if n.isdigit()
                  and os.path.isdir(os.path.join(path, n)))


def kept_parameters(workdir: str, which: str = 'best') -> tuple[str | None, int | None]:
    """(source, step) of the parameters a run evaluates: ('best', step) when `best/` holds some
    (the trainer and `load_run` use them), else ('last', the latest checkpoint's step), else
    (None, None) (a method that does not train)."""
    best, last = _step_dirs(os.path.join(workdir, 'best')), _step_dirs(os.path.join(workdir, 'checkpoints'))
    if which == 'best' and best:
        return 'best', best[-1]
    if last:
        return 'last', last[-1]
    return None, None


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _validation_at(workdir: str, step: int) -> dict | None:
    hist = _read_jsonl(os.path.join(workdir, 'metrics', 'valid_history.jsonl'))
    recs = [r for r in hist if r.get('step') == step]
    if not recs:
        return None
    rec = dict(recs[-1])
    if len({r.get('phase') for r in hist}) > 1:          # several phases validated (AOS4Rec)
        rec['several_phases'] = True
    return rec


def why_kept(workdir: str, config, k: int, which: str = 'best') -> tuple[int | None, str]:
    """(step, the reason in words) of the parameters evaluated; step None: nothing trained."""
    source, step = kept_parameters(workdir, which)
    if source is None:
        return None, 'no training: the parameters are fitted on the training split when the run starts'
    where = os.path.join(workdir, 'best' if source == 'best' else 'checkpoints', str(step))
    if source == 'last':
        why = ('the latest checkpoint' + (' (asked for with --params last)' if which == 'last'
                                          else ' (no validated parameters were kept)'))
        return step, f'{where}: {why}'
    rec = _validation_at(workdir, step)
    why = 'kept for ' + SELECTION.get(config.select_by, config.select_by).format(k=k)
    if rec is not None:
        ndcg = rec.get(f'sampled/ndcg@{k}')
        figs = []
        if 'nll_oracle' in rec:
            figs.append(f'NLL_oracle {rec["nll_oracle"]:.2f}')
        if ndcg is not None:
            figs.append(f'sampled NDCG@{k} {ndcg:.4f}')
        if figs:
            why += f' ({", ".join(figs)}; {rec.get("users", "?")} validation users)'
        if rec.get('at_entry') and rec.get('phase'):
            why += (f', the parameters the {rec["phase"]} phase started from (none of its '
                    'updates validated better)')
        elif rec.get('several_phases') and rec.get('phase'):
            why += f', in the {rec["phase"]} phase'
    return step, f'{where}: {why}'


def params_line(workdir: str, config, method, which: str = 'best') -> str:
    """One line for `evaluate` and `recommend`: which run, step and parameters they use."""
    k = method.info.k
    step, why = why_kept(workdir, config, k, which)
    head = f'run {os.path.abspath(workdir)} (model {config.model}, {config.train_steps} training steps)'
    if step is None:
        return f'{head}; parameters: {why}'
    return f'{head}; parameters of step {step}, {why}'


def decode_warnings(method, given: dict) -> list[str]:
    """Warning lines for the decoding flags given (`{config.decode field: value}`, None = not
    given) that the run's method does not read. A method that decodes reports its decoder config
    (a dict with the strategy) in `decode_description()`; one that does not (PopRec: 'top-k
    scores') reads none of them."""
    given = {f: v for f, v in given.items() if v is not None}
    if not given:
        return []
    desc = method.decode_description()
    flags = ', '.join(f'{FLAG_OF_FIELD.get(f, f)} {v}' for f, v in given.items())
    if not isinstance(desc, dict) or 'strategy' not in desc:
        return [f'warning: {flags}: not used; this run\'s method ({method.config.model}) makes its '
                f'lists by {desc}, not with a decoder']
    strategy = desc['strategy']
    read = STRATEGY_FIELDS.get(strategy, set()) | {'strategy'}
    out = []
    for f, v in given.items():
        if f not in read:
            note = (' (the top-K of the next-item scores; give --strategy beam or greedy to decode)'
                    if strategy == 'topk' else '')
            out.append(f'warning: {FLAG_OF_FIELD.get(f, f)} {v}: not used by the {strategy} '
                       f'strategy{note}')
    return out


# ------------------------------------------------------------------------------ PopRec reference
class PopRecReference:
    """PopRec fitted on the run's dataset, with one jit-compiled evaluator for every split."""

    def __init__(self, ds, batch_size: int):
        self.ds = ds
        self.params = poprec_method.fit(ds)
        self.evaluator = evaluation.Evaluator(poprec_method.make_generate_fn(ds.info), ds, batch_size)

    def __call__(self, split: str, max_users: int = 0):
        return poprec_reference(self.ds, split, max_users, self)


def poprec_reference(ds, split: str, max_users: int = 0, ref: PopRecReference | None = None,
                     batch_size: int = 256) -> tuple[dict, dict]:
    """PopRec's summary on `split` of the same dataset ({'sampled', 'full', 'users'}, plus
    'nll_oracle' {'sampled', 'full', 'target'} on synthetic data), and {'seconds', 'distinct_full'}
    (the seconds include fitting and compiling when `ref` is not given)."""
    t0 = time.time()
    ref = ref or PopRecReference(ds, batch_size)
    params, ev = ref.params, ref.evaluator
    es = ds.eval_set(split, max_users)
    summ, sampled, full = ev(params, es, jax.random.PRNGKey(0))
    if datasets.oracle_for(ds) is not None:
        summ['nll_oracle'] = {'sampled': datasets.oracle_nll(ds, es, sampled),
                              'full': datasets.oracle_nll(ds, es, full),
                              'target': datasets.oracle_nll(ds, es, es.target)}
    return summ, {'seconds': time.time() - t0, 'distinct_full': _distinct(full)}


def oracle_greedy_reference(ds, es, k: int) -> dict:
    """The oracle's own greedy lists of k items after each user's history (full protocol, no
    repeats): {'nll': their mean NLL_oracle, 'distinct': _distinct(...)}. What a model that had
    learned the oracle exactly would reach with greedy decoding."""
    params, _, prefix = datasets.oracle_prefix(ds, es)
    lists, nll = [], []
    for lo in range(0, len(prefix), 1024):
        g = synthetic.greedy_continuation(params, prefix[lo:lo + 1024], k)
        lists.append(np.asarray(g))
        nll.append(np.asarray(synthetic.nll(params, prefix[lo:lo + 1024], g)))
    return {'nll': float(np.concatenate(nll).mean()), 'distinct': _distinct(np.concatenate(lists))}


def _distinct(lists) -> dict:
    """How many different lists, and the share of users given the most common one."""
    rows = [tuple(r) for r in np.asarray(lists).tolist()]
    if not rows:
        return {'distinct': 0, 'users': 0, 'top_share': 0.0}
    counts = {}
    for r in rows:
        counts[r] = counts.get(r, 0) + 1
    return {'distinct': len(counts), 'users': len(rows), 'top_share': max(counts.values()) / len(rows)}


def _predicted_full_lists(workdir: str):
    path = os.path.join(workdir, 'predictions', 'test.parquet')
    if not os.path.exists(path):
        return None
    import pyarrow.parquet as pq
    col = pq.read_table(path, columns=['generated_full']).column('generated_full').to_pylist()
    return [[x if x is not None else '' for x in r] for r in col]


# ------------------------------------------------------------------------------ the summary
def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    return f'{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


def _rel(workdir: str, name: str) -> str:
    return os.path.join(workdir, name)


def build_summary(config, workdir: str, ds, method, results: dict, wall_s: float | None,
                  ref: PopRecReference | None = None) -> tuple[str, dict]:
    """(the text, the JSON record) of the closing summary."""
    info = ds.info
    K = info.k
    test = results['test']
    is_poprec = isinstance(method, poprec_method.PopRec)
    if is_poprec:
        pop, pop_meta = None, None
    else:
        t0 = time.time()
        ref = ref or PopRecReference(ds, config.eval_batch_size)
        pop, pop_meta = ref('test')
        pop_meta['seconds'] = time.time() - t0
    oracle = 'nll_oracle' in test
    step, why = why_kept(workdir, config, K)
    if not method.trains:
        step, why = None, 'no training: the parameters are fitted on the training split when the run starts'
    total = int(config.train_steps) if method.trains else 0
    lists = _predicted_full_lists(workdir)
    mine = _distinct(lists) if lists is not None else None

    files = [f for f in ('metrics/test.json', 'metrics/valid.json', 'predictions/test.parquet',
                         'plots/training.png', 'metrics/train.jsonl', 'metrics/valid_history.jsonl')
             if os.path.exists(_rel(workdir, f))]
    data_name = ('synthetic oracle data' if oracle else os.path.basename(os.path.normpath(ds.data_dir)))
    rule = '=' * 96
    lines = [rule, 'RUN SUMMARY', rule,
             f'run          {workdir}: {config.model} on {data_name} ({info.num_users:,} users, '
             f'{info.num_items:,} items, K={K})'
             + (f'; wall time {_fmt_time(wall_s)}' if wall_s is not None else '')]
    if method.trains:
        lines.append(f'parameters   step {step} of {_schedule_total(workdir, total)}, {why}'
                     if step is not None else f'parameters   {why}')
    else:
        lines.append(f'parameters   {why}')
    lines.append(f'results      in {workdir}/: ' + ', '.join(files[:3]))
    if len(files) > 3:
        lines.append('             ' + ', '.join(files[3:]))
    lines.append('             summary.txt (this summary), metrics/summary.json')
    head = f'test split, {test["users"]:,} users'
    if pop is None:
        lines.append(f'{head:<28}{"sampled":>12}{"full":>12}    (this run is PopRec)')
        for m in METRICS:
            key = f'{m}@{K}'
            lines.append(f'  {key:<26}{test["sampled"][key]:>12.4f}{test["full"][key]:>12.4f}')
    else:
        lines.append(f'{head:<28}{"sampled protocol":^24}{"full protocol":^24}')
        lines.append(f'{"":<28}{"this run":>12}{"PopRec":>12}{"this run":>12}{"PopRec":>12}')
        for m in METRICS:
            key = f'{m}@{K}'
            lines.append(f'  {key:<26}{test["sampled"][key]:>12.4f}{pop["sampled"][key]:>12.4f}'
                         f'{test["full"][key]:>12.4f}{pop["full"][key]:>12.4f}')
    if oracle:
        n = test['nll_oracle']
        if pop is None:
            lines.append(f'  {"NLL_oracle (nats/list)":<26}{n["sampled"]:>12.2f}{n["full"]:>12.2f}')
        else:
            p = pop['nll_oracle']
            lines.append(f'  {"NLL_oracle (nats/list)":<26}{n["sampled"]:>12.2f}{p["sampled"]:>12.2f}'
                         f'{n["full"]:>12.2f}{p["full"]:>12.2f}')
        lines.append(f'  NLL_oracle: lower = more likely under the oracle; the true continuations (the '
                     f'oracle\'s samples): {n["target"]:.2f}')
        og = oracle_greedy_reference(ds, ds.eval_set('test'), K)
        lines.append(f'  the oracle\'s own greedy lists (an exact model decoding greedily): {og["nll"]:.2f}, '
                     f'{og["distinct"]["distinct"]:,} different full-protocol lists')
    else:
        og = None
    if mine is not None:
        txt = (f'  this run\'s full-protocol lists: {mine["distinct"]:,} different among {mine["users"]:,} users '
               f'(the most common one: {100 * mine["top_share"]:.0f}% of users)')
        if pop_meta is not None:
            d = pop_meta['distinct_full']
            txt += f'; PopRec: {d["distinct"]:,} ({100 * d["top_share"]:.0f}%)'
        lines.append(txt)
    verdict = None
    if pop is not None:
        verdict = _verdict(config, test, pop, K, oracle)
        lines.append(f'PopRec       the {K} most popular training items, computed now on the same test '
                     f'split in {pop_meta["seconds"]:.1f} s')
        if verdict:
            lines.append(f'verdict      {verdict}')
    lines.append(rule)
    record = dict(workdir=workdir, model=config.model, kept_step=step, kept_why=why,
                  select_by=config.select_by, test=test, poprec_test=pop,
                  poprec_seconds=None if pop_meta is None else pop_meta['seconds'],
                  distinct_full=mine, poprec_distinct_full=None if pop_meta is None else pop_meta['distinct_full'],
                  wall_s=wall_s, verdict=verdict, oracle_greedy=og)
    return '\n'.join(lines), record


def _schedule_total(workdir: str, fallback: int) -> int:
    """The run's last step (its phases together: AOS4Rec adds critic and SSRGAN steps)."""
    steps = _step_dirs(os.path.join(workdir, 'checkpoints'))
    return max([fallback] + steps)


def _verdict(config, test, pop, K, oracle) -> str | None:
    """The figure the parameters were selected by, this run against PopRec on the test split."""
    if config.select_by == 'nll_oracle' and oracle:
        a, b = test['nll_oracle']['sampled'], pop['nll_oracle']['sampled']
        rel = 'lower (better) than' if a < b else 'not lower than'
        return (f'selected by NLL_oracle: test NLL_oracle of the sampled-protocol lists {a:.2f} nats, '
                f'{rel} PopRec\'s {b:.2f} (true continuations: {test["nll_oracle"]["target"]:.2f})')
    scene = 'full' if config.select_by == 'full_ndcg' else 'sampled'
    a, b = test[scene][f'ndcg@{K}'], pop[scene][f'ndcg@{K}']
    rel = 'above' if a > b else 'not above'
    what = 'selected by' if config.select_by in ('ndcg', 'full_ndcg') else 'for comparison,'
    return f'{what} {scene} NDCG@{K}: test {a:.4f}, {rel} PopRec\'s {b:.4f} ({100 * (a / b - 1):+.1f}%)' \
        if b > 0 else None


def _wall_seconds(workdir: str) -> float | None:
    """Seconds since this command wrote the run's config.json (the first thing a run does)."""
    path = os.path.join(workdir, 'config.json')
    return time.time() - os.path.getmtime(path) if os.path.exists(path) else None


def _print(text: str) -> None:
    print(text, flush=True)


def finish(config, workdir: str, ds, method, results: dict, out=None) -> dict:
    """The closing summary of a run (process 0 only): draws the plot, prints the summary and writes
    `summary.txt` and `metrics/summary.json`. Returns the JSON record."""
    out = out or _print
    wall = _wall_seconds(workdir)
    ref = None if isinstance(method, poprec_method.PopRec) else PopRecReference(ds, config.eval_batch_size)
    try:                            # first: the summary lists the plot's file
        plot(workdir, config, ds, method, ref)
    except Exception as e:          # a plot never costs a finished run its summary
        out(f'(no plot: {type(e).__name__}: {e})')
    text, record = build_summary(config, workdir, ds, method, results, wall, ref)
    with open(os.path.join(workdir, 'summary.txt'), 'w') as f:
        f.write(text + '\n')
    evaluation.write_json(os.path.join(workdir, 'metrics', 'summary.json'), record)
    out(text)
    return record


# ------------------------------------------------------------------------------ the plot
def plot(workdir: str, config, ds, method, ref: PopRecReference | None = None) -> str | None:
    """plots/training.png: training loss; validation (sampled protocol) with PopRec's figure on the
    same validation users; on synthetic data the oracle NLL of the validation lists with PopRec's
    and the true continuations'; the adversarial phases' figures (AOS4Rec): the training batches'
    losses, the critic's separation on validation users (AUC, Wasserstein estimate) and the
    advantage's mean and spread on the same users. The kept step is marked
    on every panel. Returns the path, or None (nothing trained, or no matplotlib)."""
    tr = _read_jsonl(os.path.join(workdir, 'metrics', 'train.jsonl'))
    va = _read_jsonl(os.path.join(workdir, 'metrics', 'valid_history.jsonl'))
    if not tr:
        return None
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    K = ds.info.k
    source, kept = kept_parameters(workdir)
    oracle = any('nll_oracle' in r for r in va)
    base = None
    if va:
        ref = ref or PopRecReference(ds, config.eval_batch_size)
        base, _ = ref('valid', config.max_eval_users)
    s2s = [r for r in tr if 'loss' in r]
    adv = [r for r in tr if 'loss' not in r]
    sep = [r for r in adv if 'val_auc' in r]        # the critic's separation on validation users
    vadv = [r for r in sep if 'val_adv_mean' in r]  # the advantage on the same users
    n = 2 + int(oracle) + int(bool(adv)) + int(bool(sep)) + int(bool(vadv))
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.0))
    ax = axes[0]
    ax.plot([r['step'] for r in s2s], [r['loss'] for r in s2s])
    ax.set(xlabel='step', ylabel='training loss (mean over the logged steps)', title='training loss')
    ax = axes[1]
    users = va[-1].get('users') if va else None
    if va:
        for key in [k for k in va[0] if k.startswith('sampled/')]:
            line, = ax.plot([r['step'] for r in va], [r[key] for r in va], marker='o',
                            label=key.split('/')[1])
            if base is not None and key.split('/')[1] in base['sampled']:
                ax.axhline(base['sampled'][key.split('/')[1]], color=line.get_color(), ls=':', lw=1)
    ax.set(xlabel='step', ylabel=f'metric @{K} (higher is better)',
           title=f'validation, sampled protocol ({users:,} users)' if users else 'validation')
    ax.plot([], [], color='gray', ls=':', label='PopRec (same users)')
    if va:
        ax.legend(fontsize=7)
    i = 2
    if oracle:
        ax = axes[i]
        i += 1
        pts = [(r['step'], r['nll_oracle']) for r in va if 'nll_oracle' in r]
        ax.plot(*zip(*pts), marker='o', label='this model (beam lists)')
        if base is not None and 'nll_oracle' in base:
            ax.axhline(base['nll_oracle']['sampled'], color='gray', ls=':', label='PopRec')
            ax.axhline(base['nll_oracle']['target'], color='green', ls='--',
                       label='true continuations')
            og = oracle_greedy_reference(ds, ds.eval_set('valid', config.max_eval_users), K)
            ax.axhline(og['nll'], color='black', ls='-.', label="the oracle's greedy lists")
        ax.set(xlabel='step', ylabel='NLL_oracle, nats per list (lower is better)',
               title=f'oracle NLL of the validation lists ({users:,} users)')
        ax.legend(fontsize=7)
    if adv:
        ax = axes[i]
        keys = [k for k in ('wasserstein', 'td_loss', 'advantage') if any(k in r for r in adv)] or \
            [k for k in adv[0] if k not in ('step', 'phase', 'steps_per_s')][:3]
        for key in keys:
            pts = [(r['step'], r[key]) for r in adv if key in r]
            if pts:
                ax.plot(*zip(*pts), label=key)
        ax.legend(fontsize=7)
        ax.set(xlabel='step', ylabel='value', title=' / '.join(sorted({r['phase'] for r in adv})))
        i += 1
    if sep:
        ax = axes[i]
        ax.plot([r['step'] for r in sep], [r['val_auc'] for r in sep], marker='o', color='C0',
                label='AUC of D(x, y*) vs D(x, y^), all pairs of users')
        paired = [(r['step'], r['val_auc_paired']) for r in sep if 'val_auc_paired' in r]
        if paired:
            ax.plot(*zip(*paired), marker='.', color='C4',
                    label="AUC, each user's own pair")
        nll = [(r['step'], r['val_auc_nll']) for r in sep if 'val_auc_nll' in r]
        if nll:
            ax.plot(*zip(*nll), marker='^', color='C2', ls='--',
                    label="AUC of the generator's own list NLL (reference judge)")
        ax.axhline(0.7, color='C0', ls=':', lw=1, label='AUC bar 0.7')
        ax.set(xlabel='step', ylabel='AUC (0.5 = no separation)', ylim=(0, 1),
               title="the critic's separation on validation users")
        tw = ax.twinx()
        tw.plot([r['step'] for r in sep], [r.get('val_wasserstein', float('nan')) for r in sep],
                marker='s', color='C1', label='Wasserstein estimate')
        tw.set_ylabel('Wasserstein estimate (mean D(y*) - D(y^))')
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = tw.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7)
        i += 1
    if vadv:
        ax = axes[i]
        steps = [r['step'] for r in vadv]
        mean = [r['val_adv_mean'] for r in vadv]
        std = [r.get('val_adv_std', float('nan')) for r in vadv]
        ax.plot(steps, mean, marker='o', color='C3', label='advantage, mean over positions')
        ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color='C3', alpha=0.2, label='mean ± std')
        ax.axhline(0.0, color='gray', ls=':', lw=1)
        ax.set(xlabel='step', ylabel='gamma D(x, y_1:t) - D(x, y_1:t-1)',
               title="the generator's advantage on validation users")
        ax.legend(fontsize=7)
    if kept is not None and source == 'best':
        for ax in axes:
            ax.axvline(kept, color='red', ls='--', lw=1)
        axes[1].plot([], [], color='red', ls='--', lw=1, label=f'kept: step {kept}')
        if va:
            axes[1].legend(fontsize=7)
    fig.suptitle(f'{workdir}: {config.model}, kept step {kept} (select_by={config.select_by})'
                 if kept is not None else f'{workdir}: {config.model}', fontsize=9)
    fig.tight_layout()
    path = os.path.join(workdir, 'plots', 'training.png')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp-{os.getpid()}.png'
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    plt.close(fig)
    return path
