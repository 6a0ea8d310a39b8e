"""page-idle on a 64-bit kernel: the bits are in page->flags, and we say so.

The real 32-bit decoding is proved in test_vm_page_idle.py; here a synthetic
64-bit kernel (inspector.sim.synthetic) stands in for the x86-64 test kernels.
"""

from __future__ import annotations

import pytest

from inspector.clients.page_idle import PageIdle
from inspector.discover import discover
from inspector.sim import scenarios
from inspector.sim.synthetic import build, picture
from inspector.sim.variants import get
from inspector.target import TargetError
from inspector.walk import walk


def test_64bit_kernel_is_refused_with_one_clear_line():
    res = scenarios.run(scenarios.load("boot-2-nodes"), "v6.1")
    prog = build(picture(res, get("v6.1")))
    geo = discover(prog)
    assert "page_idle" not in [c.name for c in geo.clients]
    with pytest.raises(TargetError) as e:
        PageIdle(prog, geo, walk(prog, geo))
    msg = str(e.value)
    assert "page->flags" in msg and "64-bit" in msg and "\n" not in msg
