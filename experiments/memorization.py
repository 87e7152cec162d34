"""How far apart are real and generated lists, judged by the generator's own likelihood, on the
windows it was fit on and on windows it never saw? (docs/aos4rec.md, "Held-out users for the
critic")

    python -m experiments.memorization --workdir RUN [--batches 4] [--out FILE.json]

RUN is a finished main.py run of a seq2seq model (transformer or gru). Its kept generator draws
lists y^ (the policy of the SSRGAN phase: temperature, Gumbel-max, history banned as in
training) for
  seq2seq  training windows of the users the seq2seq phase drew from (every user, or those
           outside aos4rec.critic_holdout),
  critic   training windows of the held-out users (only with aos4rec.critic_holdout > 0),
  valid    the validation examples of aos4rec.critic_eval_users validation users,
and each part reports, over `--batches` draws of batch_size windows (valid: the same users,
another key each time): auc_nll, the AUC of the per-item NLL -log P_G(y | x) of the real list
against the generated one (over all pairs; > 0.5: the real lists are the less likely ones, as
on new users; < 0.5: the generator finds the real continuations MORE likely than its own samples,
i.e. it reproduces them); nll_real and nll_fake, the mean per-item NLLs; same_position, the share
of positions where the generated item is the real one; overlap, the share of real items that the
generated list holds anywhere. Prints one JSON object (and writes it with --out).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--workdir', required=True)
    ap.add_argument('--batches', type=int, default=4)
    ap.add_argument('--out', default='')
    args = ap.parse_args(argv)
    import jax
    import jax.numpy as jnp
    from aos4rec_jax import aos4rec as aos4rec_lib
    from aos4rec_jax import data as data_lib
    from aos4rec_jax import sharding as shard_lib
    from aos4rec_jax import trainer
    from aos4rec_jax.methods.aos4rec import AOS4Rec
    try:
        config, ds, _, params, _ = trainer.load_run(args.workdir)
    except (FileNotFoundError, trainer.RunError) as e:
        print(f'memorization: error: {e}', file=sys.stderr)
        return 2
    if config.model not in ('transformer', 'gru'):
        print(f'memorization: error: {args.workdir} is a {config.model} run; a seq2seq generator '
              '(transformer or gru) is needed', file=sys.stderr)
        return 2
    config.aos4rec.adversarial = True            # for the held-out validation users' arrays
    method = AOS4Rec(config, ds)
    st = method.steps(shard_lib.make_mesh(jax.devices()[:1]))
    data = ds.device_data()

    def judge(history, real, banned, key):
        fake = st.generate(params, history, banned, key)
        nr, nf = st.list_nll(params, history, real), st.list_nll(params, history, fake)
        mask = np.asarray(real > 0)
        real_np, fake_np = np.asarray(real), np.asarray(fake)
        overlap = [len(set(r[m].tolist()) & set(f.tolist())) / max(int(m.sum()), 1)
                   for r, f, m in zip(real_np, fake_np, mask) if m.any()]
        return dict(auc_nll=float(aos4rec_lib.critic_separation(nr, nf, real > 0)['auc']),
                    nll_real=float(np.asarray(nr)[:, 1:][mask].mean()),
                    nll_fake=float(np.asarray(nf)[:, 1:][mask].mean()),
                    same_position=float((real_np == fake_np)[mask].mean()),
                    overlap=float(np.mean(overlap)))

    parts = ['seq2seq'] + (['critic'] if st.window_cums is not None else [])
    batch = jax.jit(lambda d, k: st.batch(d, k))
    res = {}
    for part in parts:
        d = st.part(data, part)
        for i in range(args.batches):
            key = jax.random.PRNGKey(1000 * (parts.index(part) + 1) + i)
            b, banned = batch(d, key)
            for k, v in judge(b.history, b.target, banned, jax.random.fold_in(key, 1)).items():
                res.setdefault(part, {}).setdefault(k, []).append(v)
    if st.val is not None:
        v = st.val
        banned = None
        if ds.info.ban_history:
            banned = data_lib.history_ban_mask(data.items, jnp.asarray(v['hist_start']),
                                               jnp.asarray(v['hist_len']), v['bound'],
                                               ds.info.vocab_size)
        for i in range(args.batches):
            r = judge(jnp.asarray(v['history']), jnp.asarray(v['target']), banned,
                      jax.random.PRNGKey(9000 + i))
            for k, val in r.items():
                res.setdefault('valid', {}).setdefault(k, []).append(val)
    out = {'workdir': os.path.abspath(args.workdir),
           'critic_holdout': float(config.aos4rec.get('critic_holdout', 0.0)),
           'windows_per_batch': int(config.batch_size), 'batches': args.batches,
           'valid_users': 0 if st.val is None else int(len(st.val['history'])),
           **{p: {k: round(float(np.mean(x)), 4) for k, x in r.items()} for p, r in res.items()}}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        tmp = args.out + '.tmp'
        with open(tmp, 'w') as f:
            f.write(text + '\n')
        os.replace(tmp, args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
