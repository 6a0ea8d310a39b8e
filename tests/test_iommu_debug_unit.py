"""page_iommu_debug (v7.0) on a synthetic kernel: on or off as its need() said.

drivers/iommu/iommu-debug-pagealloc.c (7.3): ``page_iommu_debug_ops = { .size =
sizeof(struct iommu_debug_metadata) /* one atomic_t: 4 */, .need =
need_iommu_debug }``, no need_shared_flags, and need_iommu_debug() returns the
file's ``static bool needed`` (iommu.debug_pagealloc=1).  Off, mm/page_ext.c's
invoke_need_callbacks() never sets its offset: the ops keep offset 0, size 4.
Here a simulated 6.17-rules boot (page_owner and page_table_check on, entry
from the simulator) gains those ops as the 7.3 kernel leaves them, and the
variable ``needed``; the unchanged discover/verify pipeline must call the
client off (and fail no check) when needed is false, on when it is true.
The real-kernel test is tests/test_vm_7x_clients.py.
"""

from __future__ import annotations

import drgn
import pytest

from inspector.model import Client
from inspector.sim import scenarios
from inspector.sim.synthetic import build, inspect_program, picture
from inspector.versions import get

NEEDED_AT = 0xFFFFFFFF8F000000  # a page of our own for the variable


def kernel(needed: int) -> drgn.Program:
    variant = get("v6.17")
    res = scenarios.run(scenarios.load("boot-2-nodes"), "v6.17")
    res.layout.clients.append(Client("page_iommu_debug", 0, 4, False, False))  # as the kernel leaves it off
    prog = build(picture(res, variant))
    byte = bytes([needed]) + bytes(4095)
    prog.add_memory_segment(NEEDED_AT, len(byte), lambda a, c, o, p: byte[o:o + c])
    obj = drgn.Object(prog, prog.type("_Bool"), address=NEEDED_AT)

    def find_object(prog_, name, flags, filename):
        if name == "needed" and (filename is None or filename.endswith("iommu-debug-pagealloc.c")):
            return obj
        return None

    prog.register_object_finder("iommu-debug-test", find_object, enable_index=0)
    return prog


def test_off_when_need_said_no():
    _geo, layout, checks = inspect_program(kernel(0))
    c = {c.name: c for c in layout.clients}["page_iommu_debug"]
    assert (c.offset, c.size, c.active) == (0, 4, False)
    assert [x for x in checks if x.status == "fail"] == []


def test_on_when_need_said_yes():
    _geo, layout, _checks = inspect_program(kernel(1))
    assert {c.name: c for c in layout.clients}["page_iommu_debug"].active is True


@pytest.mark.parametrize("needed", [0, 1])
def test_the_probe_reads_needed(needed):
    from inspector.clients.page_iommu_debug import active
    assert active(kernel(needed)) is bool(needed)
