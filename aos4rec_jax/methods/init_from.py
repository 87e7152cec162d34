"""`init_from`: a method's later phase starts from the generator another finished run kept.

AOS4Rec (`aos4rec.init_from`: the SSRGAN phase) and SeqGAN (`seqgan.init_from`: discriminator
pretraining, then the REINFORCE rounds) train the same seq2seq networks (models/: transformer,
gru); with `train_steps = 0` they take the kept parameters (best/) of a finished main.py run
instead of training the generator again, so one MLE run serves every adversarial row that starts
from it (experiments/ablation.py, oracle_nll_table.py). CRR (`crr.init_from`: stage 2) starts
from the policy a GPT or CRR run kept. Each calls `load` on entering that phase; a resumed run
does not enter again, so it goes on from its own checkpoint, not from the source.

The source is checked first, and every difference is named in one line (RunError):
  - a main.py run folder (config.json, dataset.json) that has finished (metrics/test.json);
  - the same network: the source's method says which network its kept `params` are
    (`Method.generator_network`: AOS4Rec `model`, SeqGAN `seqgan.generator`, GPT and CRR
    'gpt (train_len W)'), so AOS4Rec and SeqGAN start from a run of either, CRR from GPT or CRR;
  - the same sizes and shapes: model_kwargs (field by field), history_len, target_len,
    compute_dtype;
  - the same data: both synthetic with the same `synthetic` settings (its cache_dir aside), or
    the same prepared folder, not prepared again since the source was trained (the fingerprint of
    its dataset.json).
"""
from __future__ import annotations

import json
import os

import jax

from aos4rec_jax.methods.base import RunError

NETWORK_FIELDS = ('model_kwargs', 'history_len', 'target_len', 'compute_dtype')


def _differences(name: str, there, here) -> list[str]:
    """'NAME (THERE there, HERE here)' for a differing value; one entry a differing key of a
    dict (NAME.KEY), a key missing on one side shown as 'unset'."""
    if isinstance(there, dict) and isinstance(here, dict):
        out = []
        for k in sorted(set(there) | set(here)):
            out += _differences(f'{name}.{k}', there.get(k, 'unset'), here.get(k, 'unset'))
        return out
    return [] if there == here else [f'{name} ({there!r} there, {here!r} here)']


def source_network(cfg: dict) -> str | None:
    """The network whose parameters the run of config `cfg` (its config.json) keeps, or None (a
    method without one, or a model this code does not know)."""
    from aos4rec_jax import methods
    try:
        cls = methods.get(cfg.get('model', ''))
    except ValueError:
        return None
    return cls.generator_network(cfg)


def check(field: str, src: str, config, ds, network: str, network_field: str) -> None:
    """Refuses the source run folder `src` (the value of config.FIELD) unless it passes the
    checks of the module docstring: RunError naming config.FIELD and every difference.
    `network` is this run's network (Method.generator_network), set by its config field(s)
    `network_field`."""
    head = f'config.{field}: {src}'
    cfg_path, ds_path = os.path.join(src, 'config.json'), os.path.join(src, 'dataset.json')
    if not (os.path.exists(cfg_path) and os.path.exists(ds_path)):
        raise RunError(f'{head} is not a run folder of main.py (no config.json/dataset.json)')
    if not os.path.exists(os.path.join(src, 'metrics', 'test.json')):
        raise RunError(f'{head} has not finished (no metrics/test.json): the generator it keeps '
                       'may still change; let it finish (rerun its command) first')
    with open(cfg_path) as f:
        other = json.load(f)
    with open(ds_path) as f:
        other_ds = json.load(f)
    mine = config.to_dict()
    diff = []
    theirs = source_network(other)
    if theirs is None:
        diff.append(f'{network_field} (model {other.get("model")!r} there keeps no generator '
                    f'network; {network!r} here)')
    elif theirs != network:
        diff.append(f'{network_field} ({theirs!r} there, {network!r} here)')
    for k in NETWORK_FIELDS:
        diff += _differences(k, other.get(k), mine.get(k))
    # the users the seq2seq phase left out (aos4rec.critic_holdout) must be the same, else the
    # critic would train on windows the source generator was fit on
    held = [float((c.get('aos4rec') or {}).get('critic_holdout', 0.0)) for c in (other, mine)]
    if held[0] != held[1]:
        diff.append(f'aos4rec.critic_holdout ({held[0]:g} there, {held[1]:g} here)')
    other_dir = other_ds.get('data_dir') or ''
    if not mine['data_dir'] and not other.get('data_dir'):       # both synthetic: same oracle data?
        strip = lambda s: {k: v for k, v in (s or {}).items() if k != 'cache_dir'}
        diff += _differences('synthetic', strip(other.get('synthetic')), strip(mine['synthetic']))
    elif os.path.abspath(other_dir) != os.path.abspath(ds.data_dir):
        diff.append(f'data ({other_dir} there, {ds.data_dir} here)')
    elif other_ds.get('fingerprint'):
        from aos4rec_jax import datasets
        now = datasets.fingerprint(ds.data_dir)
        old = other_ds['fingerprint']
        changed = sorted(n for n in set(old) | set(now) if old.get(n) != now.get(n))
        if changed:
            diff.append(f'data ({ds.data_dir} was prepared again since that run was trained: '
                        f'{", ".join(changed)} changed)')
    if diff:
        raise RunError(f'{head} differs from this run in {"; ".join(diff)}')


def load(field: str, src: str, config, ds, abstract_params, network: str, network_field: str):
    """The kept generator parameters of the run folder `src` (the value of config.FIELD; checked
    by `check`), placed as `abstract_params` (ShapeDtypeStructs with shardings)."""
    from aos4rec_jax import checkpoint as ckpt_lib
    check(field, src, config, ds, network, network_field)
    params = ckpt_lib.restore_params_only(src, abstract_params, 'best')
    shardings = jax.tree_util.tree_map(lambda a: a.sharding, abstract_params)
    return jax.device_put(params, shardings)
