"""The config files of experiments/configs/, one line each: `python main.py list` and `--help`.

Not a config file itself (the leading underscore keeps it out of every listing).
"""
from __future__ import annotations

import glob
import importlib
import os

HERE = os.path.dirname(os.path.abspath(__file__))
WHAT_WIDTH = 62


def config_names() -> list[str]:
    """The config files (FILE of FILE.py), sorted; base.py and _private modules are not configs."""
    return sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(HERE, '*.py'))
                  if not os.path.basename(p).startswith('_') and os.path.basename(p) != 'base.py')


def describe(name: str) -> dict:
    """{'file', 'model', 'variants', 'what'} of one config file: the method its default config
    runs (`config.model`), its variants (its own VARIANTS and base.py's) and the first line of its
    docstring."""
    from experiments.configs import base
    mod = importlib.import_module(f'experiments.configs.{name}')
    own = sorted(getattr(mod, 'VARIANTS', {}))
    variants = own + sorted(set(base.VARIANTS) - set(own))
    what = ((mod.__doc__ or '').strip().splitlines() or [''])[0].strip().rstrip('.,;:')
    if len(what) > WHAT_WIDTH:
        what = what[:WHAT_WIDTH - 3].rsplit(' ', 1)[0] + '...'
    return {'file': f'{name}.py', 'model': mod.get_config('').model, 'variants': variants,
            'own_variants': own, 'what': what}


def listing() -> str:
    """The table: file, method, own variants, what it is (one line each)."""
    rows = [describe(n) for n in config_names()]
    vw = max(len(', '.join(r['own_variants']) or '-') for r in rows) + 2
    lines = ['config files (--config=experiments/configs/FILE.py[:VARIANT[,VARIANT]]; every field is',
             'documented in experiments/configs/base.py and can be set with --config.FIELD=VALUE):',
             f'  {"FILE":<16}{"METHOD":<13}{"VARIANTS":<{vw}}WHAT']
    for r in rows:
        lines.append(f'  {r["file"]:<16}{r["model"]:<13}{", ".join(r["own_variants"]) or "-":<{vw}}{r["what"]}')
    lines.append('  every file also takes :tiny (seconds on a CPU, for tests) and :quick (minutes; the '
                 "README's first run);")
    lines.append('  variants combine with commas: aos4rec.py:tiny,adver')
    from aos4rec_jax import methods
    lines.append('methods (config.model): ' + ', '.join(methods.names()))
    return '\n'.join(lines)
