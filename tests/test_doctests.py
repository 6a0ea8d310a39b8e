"""The ``>>>`` examples in the library's docstrings run, so they cannot drift.

A ``>>> %command`` line is a drgn session shown in a docstring (drgn's
prompt is Python's), not Python: it is left out.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["inspector.versions", "inspector.cli", "inspector.model", "inspector.drgn_plugin",
           "inspector.decode.owner"]


class _Parser(doctest.DocTestParser):
    def get_examples(self, string, name="<string>"):
        return [e for e in super().get_examples(string, name) if not e.source.startswith("%")]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(parser=_Parser())
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0
