"""The hand-mutation list (tests/mutation_check.py) stays applicable: every mutation's text occurs
exactly once in its file and every test it names exists. Code that moves (a refactor) must move its
mutations with it, or this fails and says which one."""
import pytest

from tests import mutation_check


@pytest.mark.parametrize('m', mutation_check.MUTATIONS, ids=lambda m: m.id)
def test_mutation_applies_and_names_existing_tests(m):
    assert mutation_check.check_applies(m) is None, mutation_check.check_applies(m)
    assert m.old != m.new and m.tests


def test_mutation_ids_are_unique():
    ids = [m.id for m in mutation_check.MUTATIONS]
    assert len(ids) == len(set(ids))
