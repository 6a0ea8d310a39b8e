"""The drgn-style helpers on synthetic kernels: SPARSEMEM (with a hot-remove in
flight, PAGE_EXT_INVALID set) and FLATMEM (tables rounded and padded), every variant.

A synthetic kernel (inspector.sim.synthetic) is a real drgn.Program whose
memory holds what the simulator predicted; the helpers read that memory the
way they read a vmcore, and must land on the entries the simulator laid out:
entry address = table base + page_ext_size x (pfn - table's first pfn).
"""

from __future__ import annotations

import drgn
import pytest
from drgn.helpers.linux.mm import pfn_to_page

from inspector.helpers import (decode_gfp_mask, for_each_page_ext_table, get_page_owner, lookup_page_ext,
                               page_ext_data, page_ext_next, page_ext_size, pfn_to_page_ext, static_key_enabled)
from inspector.sim import scenarios
from inspector.sim.synthetic import build, picture
from inspector.versions import VARIANTS, get


def kernel(name: str, variant: str):
    res = scenarios.run(scenarios.load(name), variant)
    return res, build(picture(res, get(variant)))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", ["hot-remove-reader", "flatmem-unaligned", "hot-add-online"])
def test_pfn_to_page_ext_lands_on_the_simulated_entries(name, variant):
    if name.startswith("flatmem") and variant == "seed-as-posted":
        pytest.skip("the seed as posted indexed FLATMEM from the node start; no merged kernel did "
                    "(eefa864b701d rounds down to MAX_ORDER_NR_PAGES), and the helpers follow the kernels")
    res, prog = kernel(name, variant)
    lay = res.layout
    assert page_ext_size(prog) == lay.entry_size
    tables = {t.start_pfn: t for t in lay.tables if t.state == "online"}
    listed = list(for_each_page_ext_table(prog))
    assert [(s, n, p.value_()) for s, n, p in listed] == \
        [(t.start_pfn, t.nr_pages, t.address) for t in sorted(tables.values(), key=lambda t: t.start_pfn)]
    for t in tables.values():
        # The pfns a lookup is for: the section, or (FLATMEM) the node's own span;
        # the table's MAX_ORDER padding around a node is for buddy checks only.
        lo, hi = (t.start_pfn, t.end_pfn) if lay.section_pages else res.spans[t.node]
        for pfn in (lo, lo + 1, hi - 1):
            pe = pfn_to_page_ext(prog, pfn)
            assert pe.value_() == t.address + lay.entry_size * (pfn - t.start_pfn), (pfn, hex(pe.value_()))
        assert page_ext_next(pfn_to_page_ext(prog, lo)).value_() == \
            t.address + lay.entry_size * (lo - t.start_pfn + 1)
    # A section whose table is being hot-removed (PAGE_EXT_INVALID, v6.1+) has no usable entry.
    for t in lay.tables:
        if t.state == "invalid":
            assert not pfn_to_page_ext(prog, t.start_pfn)
    # A pfn beyond memory: NULL, like lookup_page_ext() for a section without a table.
    assert not pfn_to_page_ext(prog, 1 << 32)


def test_pfn_to_page_ext_without_sections_per_root_in_vmcoreinfo():
    # A kdump whose VMCOREINFO lost LENGTH(mem_section): drgn has no
    # SECTIONS_PER_ROOT (nor NR_SECTION_ROOTS) and its pfn_to_section() raises;
    # the lookup takes it from mem_section's type and lands on the same entries.
    res = scenarios.run(scenarios.load("hot-add-online"), "v6.1")
    prog = build(picture(res, get("v6.1")), lose=frozenset({"SECTIONS_PER_ROOT", "NR_SECTION_ROOTS"}))
    with pytest.raises(LookupError):
        prog["SECTIONS_PER_ROOT"]
    lay = res.layout
    online = [t for t in lay.tables if t.state == "online"]
    assert len(online) > 1
    for t in online:
        for pfn in (t.start_pfn, t.end_pfn - 1):
            assert pfn_to_page_ext(prog, pfn).value_() == t.address + lay.entry_size * (pfn - t.start_pfn)
    assert not pfn_to_page_ext(prog, 1 << 32)


def test_lookup_page_ext_and_page_owner_of_a_page():
    res, prog = kernel("boot-2-nodes", "v6.1")
    t = res.layout.tables[2]
    pfn = t.start_pfn + 5
    page = pfn_to_page(prog, pfn)
    pe = lookup_page_ext(page)
    assert pe.value_() == lookup_page_ext(page[0]).value_() == pfn_to_page_ext(prog, pfn).value_()
    owner_off = next(c.offset for c in res.layout.clients if c.name == "page_owner")
    ops = prog["page_owner_ops"]
    assert page_ext_data(pe, ops).value_() == page_ext_data(pe, ops.address_of_()).value_() == pe.value_() + owner_off


def test_static_key_enabled_reads_every_kind_of_key():
    _, prog = kernel("boot-2-nodes", "v6.1")
    key = prog["page_owner_inited"]  # struct static_key_false, set: page_owner is on
    assert static_key_enabled(key) is True and static_key_enabled(key.address_of_()) is True
    assert static_key_enabled(prog["page_table_check_disabled"]) is False


def test_gfp_names_fall_back_to_the_enum_and_print_leftovers_in_hex():
    prog = drgn.Program(drgn.Platform(drgn.Architecture.X86_64, drgn.PlatformFlags.IS_64_BIT
                                      | drgn.PlatformFlags.IS_LITTLE_ENDIAN))
    # No gfpflag_names table and no ___GFP_*_BIT enum: no names, every bit in hex.
    assert decode_gfp_mask(prog, 0xcc0) == "0xcc0"


def test_a_client_the_kernel_cannot_decode_is_a_client_error():
    """pe.client() on a kernel whose debug info lacks the client's types: a
    ClientError (a LookupError too), never a bare LookupError (issue 20)."""
    from inspector.errors import ClientError
    from inspector.session import PageExt
    _, prog = kernel("boot-2-nodes", "v6.1")  # no union handle_parts, no struct page_table_check
    pe = PageExt(prog)
    for name in ("page_owner", "page_table_check"):
        with pytest.raises(ClientError, match=f"cannot decode {name} in this kernel"):
            pe.client(name)


def test_the_drgn_plugin_walks_a_core_once():
    """One walk per drgn program for a core (issue 19): each % command gets its
    own session, on the same layout, with its own record of what is missing."""
    from inspector.drgn_plugin import session
    res, prog = kernel("boot-2-nodes", "v6.1")
    a, b = session(prog), session(prog)
    assert a is not b and a.layout is b.layout and a.missing is not b.missing
    assert [t.address for t in b.layout.tables] == [t.address for t in res.layout.tables]
