"""page-idle on a 64-bit kernel: the bits are in page->flags, and we say so.

The real 32-bit decoding is proved in test_vm_page_idle.py; here a synthetic
64-bit kernel (inspector.sim.synthetic) stands in for the x86-64 test kernels.
"""

from __future__ import annotations

import pytest

from inspector import ClientError, PageExt
from inspector.sim import scenarios
from inspector.sim.synthetic import build, picture
from inspector.versions import get


def test_64bit_kernel_is_refused_with_one_clear_line():
    res = scenarios.run(scenarios.load("boot-2-nodes"), "v6.1")
    pe = PageExt(build(picture(res, get("v6.1"))))
    assert "page_idle" not in [c.name for c in pe.layout.clients]
    with pytest.raises(ClientError) as e:
        pe.client("page_idle")
    msg = str(e.value)
    assert "page->flags" in msg and "64-bit" in msg and "\n" not in msg
