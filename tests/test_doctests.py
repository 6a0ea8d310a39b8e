"""The ``>>>`` examples in the library's docstrings run, so they cannot drift.

A ``>>> %command`` line is a drgn session shown in a docstring (drgn's
prompt is Python's), not Python: it is left out.

The drgn-facing helpers need a kernel: their examples run on a recorded
fixture, the synthetic kernel (:mod:`inspector.sim.synthetic`, a real
:class:`drgn.Program`) of the recorded scenario ``boot-2-nodes``
(inspector/sim/recorded/boot-2-nodes.json) under the v6.1 rules, made drgn's
default program and named ``prog``.  Its tables are where the simulator's
recorded run put them, so what the examples print is the recording's, not
the helpers' own output copied back.
"""

from __future__ import annotations

import doctest
import importlib

import drgn
import pytest

MODULES = ["inspector.versions", "inspector.text", "inspector.jsonout", "inspector.cli", "inspector.model", "inspector.drgn_plugin",
           "inspector.decode.owner", "inspector.decode.engine", "inspector.decode.flags", "inspector.decode.kformat",
           "inspector.decode.sums", "inspector.clients", "inspector.clients.aggregators", "inspector.clients.alloc_tag",
           "inspector.helpers", "inspector.helpers.page_ext", "inspector.helpers.page_owner", "inspector.kernel",
           "inspector.demo"]
# Modules whose every example needs what the fixture kernel lacks (struct
# page_owner, gfpflag_names): marked +SKIP, run on real kernels by test_vm_drgn.
ALL_SKIPPED = {"inspector.helpers.page_owner"}


class _Parser(doctest.DocTestParser):
    def get_examples(self, string, name="<string>"):
        return [e for e in super().get_examples(string, name) if not e.source.startswith("%")]


@pytest.fixture(scope="module")
def fixture_prog():
    from inspector.sim import scenarios
    from inspector.sim.synthetic import build, picture
    from inspector.versions import get
    res = scenarios.run(scenarios.load("boot-2-nodes"), "v6.1")
    # the recording is the oracle: the run must be the one recorded
    assert [t.start_pfn for t in res.layout.tables] == [t["start_pfn"] for t in
                                                        scenarios.load("boot-2-nodes")["expected"]["layout"]["tables"]]
    prog = build(picture(res, get("v6.1")))
    old = None
    try:
        old = drgn.get_default_prog()
    except drgn.NoDefaultProgramError:
        pass
    drgn.set_default_prog(prog)
    yield prog
    drgn.set_default_prog(old)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, fixture_prog):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(parser=_Parser())
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, extraglobs={"prog": fixture_prog}):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0 and (result.attempted > 0 or name in ALL_SKIPPED)
