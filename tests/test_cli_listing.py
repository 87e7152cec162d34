"""`python main.py list` and `--help` name every config file, its variants and the method it runs,
one line each (issue 16)."""
import ast
import glob
import os
import subprocess
import sys

import pytest

from aos4rec_jax import methods
from experiments.configs import _listing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config_files():
    """The config files, found here by reading the folder (not through _listing)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(ROOT, 'experiments', 'configs', '*.py'))):
        name = os.path.basename(path)
        if name.startswith('_') or name == 'base.py':
            continue
        tree = ast.parse(open(path).read())
        own = set()
        for node in tree.body:          # VARIANTS = {'name': fn, ...}
            if isinstance(node, ast.Assign) and any(getattr(t, 'id', '') == 'VARIANTS' for t in node.targets):
                own = {k.value for k in node.value.keys}
        out[name] = own
    return out


@pytest.fixture(scope='module')
def listed():
    r = subprocess.run([sys.executable, 'main.py', 'list'], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'))
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_list_names_every_config_file_its_variants_and_method_on_one_line():
    files = _config_files()
    assert len(files) >= 11
    listed = _listing.listing()
    lines = listed.splitlines()
    for name, own in files.items():
        mine = [l for l in lines if l.split()[:1] == [name]]
        assert len(mine) == 1, (name, mine)
        model = __import__(f'experiments.configs.{name[:-3]}', fromlist=['get_config']).get_config('').model
        assert mine[0].split()[1] == model
        assert model in methods.names()
        for v in own:
            assert v in mine[0], (name, v)
    # the variants every file takes, and every registered method
    assert ':tiny' in listed and ':quick' in listed
    assert 'methods (config.model): ' + ', '.join(methods.names()) in listed
    # poprec's s3rec variant is a VARIANTS entry like every other file's
    assert 's3rec' in files['poprec.py']


def test_every_listed_variant_builds():
    """What the listing offers works: FILE.py:VARIANT gives a config."""
    for r in (_listing.describe(n) for n in _listing.config_names()):
        mod = __import__(f'experiments.configs.{r["file"][:-3]}', fromlist=['get_config'])
        for v in r['variants']:
            assert mod.get_config(v).model == r['model'] or r['file'] == 'aos4rec.py'


def test_main_py_list_prints_the_listing(listed):
    assert listed.strip() == _listing.listing().strip()


def test_help_shows_the_usage_lines_and_the_listing(listed):
    r = subprocess.run([sys.executable, 'main.py', '--help'], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'))
    assert r.returncode in (0, 1), r.stderr[-2000:]      # absl's --help exits with 1
    out = r.stdout
    assert out.index('usage:') < out.index('config files') < out.index('flags:')
    assert 'python main.py list' in out and '--workdir=DIR' in out
    for line in listed.splitlines():
        assert line in out
    # the usage and example lines are separate lines, none runs on past 105 characters
    head = out[:out.index('config files')]
    assert max(len(l) for l in head.splitlines()) <= 105


def test_the_slow_list_of_conftest_names_existing_tests():
    """A renamed test would silently fall back into the smoke set."""
    from tests import conftest
    for fname, names in conftest.SLOW.items():
        path = os.path.join(ROOT, 'tests', fname)
        assert os.path.exists(path), fname
        defined = {n.name for n in ast.walk(ast.parse(open(path).read())) if isinstance(n, ast.FunctionDef)}
        assert set(names) <= defined, (fname, set(names) - defined)
