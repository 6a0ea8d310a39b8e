"""The ``>>>`` examples in the library's docstrings run, so they cannot drift."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["inspector.versions", "inspector.cli", "inspector.model"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
