"""Debian's stock 7.2 kernel (linux-image-7.2.13+deb14-amd64 and its -dbg
vmlinux): the 7.x layouts that need no page_ext client (issue 18).

It has no page_owner (CONFIG_PAGE_OWNER is off), but it has the stack depot,
hugetlb with HVO (CONFIG_HUGETLB_PAGE_OPTIMIZE_VMEMMAP, off by default: on
with hugetlb_free_vmemmap=on) and MEMORY_ISOLATION.  One boot with
``stack_depot_max_pools=2048 slub_debug=U`` (SLUB's user tracking inits the
depot) and sixteen 2 MiB hugetlb pages, vmemmap-optimized; the guest writes
its dmesg, /proc/kpageflags and /proc/pagetypeinfo to the host, is paused
and dumped.  Against those answers of the kernel's:

* the depot's pool cap is ``stack_max_pools`` behind the ``stack_pools``
  pointer (item 1: the boot line names it), and a handle the kernel stored
  is located;
* every tail page of the hugetlb folios, whose ``compound_info`` holds a mask
  under HVO, finds the head /proc/kpageflags names (item 3);
* each zone's pageblocks, decoded 8 bits a block with PB_migrate_isolate
  (item 2), count per migratetype what /proc/pagetypeinfo counts;
* the first tail page's memcg_data word holds folio->_nr_pages, and the
  debug info shows that overlay (item 6's detection; the PageTail() test
  itself needs page_owner: tests/test_vm_7x_decode.py).

The directory is the one scripts/debian-kernel.sh fills in the cache
(PAGEEXT_DEBIAN72_KERNEL_DIR to name another); without it the module skips.
With PAGEEXT_REUSE_7X=1 the last run's dump (below WORK) is checked again.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest

from testvm import TestVM

pytestmark = pytest.mark.vm

CACHE = Path(os.environ.get("PAGEEXT_CACHE", "/var/cache/pageext-inspect"))
MAX_POOLS = 2048
KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL, KPF_HUGE = 15, 16, 17  # include/uapi/linux/kernel-page-flags.h
# The last run's dump stays here; PAGEEXT_REUSE_7X=1 checks it again without a boot.
WORK = Path(tempfile.gettempdir()) / "pageext-owner-tests" / "stock72"


@pytest.fixture(scope="module")
def snap():
    env = os.environ.get("PAGEEXT_DEBIAN72_KERNEL_DIR")
    dirs = [Path(env)] if env else sorted(CACHE.glob("debian-7.2.*"))
    if not dirs or not (dirs[-1] / "vmlinux").exists():
        pytest.skip("no Debian 7.2 stock kernel in the cache "
                    "(scripts/debian-kernel.sh -s sid; scripts/test.sh fetches it)")
    kdir = dirs[-1]
    if not (os.environ.get("PAGEEXT_REUSE_7X") and (WORK / "done").exists()):
        shutil.rmtree(WORK, ignore_errors=True)
        WORK.mkdir(parents=True)
        with TestVM(kdir, cmdline=f"stack_depot_max_pools={MAX_POOLS} slub_debug=U hugetlb_free_vmemmap=on "
                    "hugepagesz=2M hugepages=16", workdir=str(WORK / "vm")) as vm:
            vm.run("dd if=/proc/kpageflags of=/share/kpageflags bs=1M 2>/dev/null; "
                   "cat /proc/pagetypeinfo > /share/pagetypeinfo; grep HugePages_Total /proc/meminfo").check()
            (WORK / "dmesg.txt").write_text(vm.dmesg())
            vm.pause()
            vm.dump(str(WORK / "core.kdump"), "kdump-zlib")
            # The guest ran on between the first read and the pause (a
            # fallback allocation may steal a pageblock): read it once more
            # after, and the dump's state is one of the two.
            vm.resume()
            vm.run("cat /proc/pagetypeinfo > /share/pagetypeinfo.after").check()
            for name in ("kpageflags", "pagetypeinfo", "pagetypeinfo.after"):
                shutil.copy(vm.share / name, WORK / name)
        (WORK / "done").write_text("ok\n")
    from inspector.target import open_target

    return {"dmesg": (WORK / "dmesg.txt").read_text(), "kpageflags": (WORK / "kpageflags").read_bytes(),
            "pagetypeinfo": (WORK / "pagetypeinfo").read_text(),
            "pagetypeinfo.after": (WORK / "pagetypeinfo.after").read_text(),
            "prog": open_target(str(WORK / "core.kdump"), None, str(kdir / "vmlinux"), None).prog}


def test_stack_pools_pointer_and_its_cap(snap):
    """Item 1 (ed4f142f72a9, v6.17): the cap is the boot parameter; the
    first record of pool 0 is found by its own handle."""
    from inspector.decode.stackdepot import StackDepot

    m = re.search(r"allocating space for (\d+) stack pools", snap["dmesg"])
    assert m and int(m.group(1)) == MAX_POOLS
    prog = snap["prog"]
    depot = StackDepot(prog, hex)
    rec = drgn_record(prog, prog["stack_pools"][0].value_())
    assert depot.locate(rec.handle.handle.value_()) == (rec.address_, rec.size.value_())
    assert depot.max_pools == MAX_POOLS


def drgn_record(prog, address: int):
    """The stack_record at ``address``, read by drgn."""
    import drgn
    return drgn.Object(prog, "struct stack_record", address=address)


def test_hvo_tail_pages_find_the_kernels_heads(snap):
    """Item 3: under HVO a tail's compound_info is GENMASK(63, order +
    log2(sizeof(struct page))) | 1; every hugetlb tail finds the head that
    /proc/kpageflags shows."""
    from inspector.decode.engine import head_pfns, page_fields

    prog = snap["prog"]
    heads, tails, head = {}, [], None
    for pfn, (flags,) in enumerate(struct.iter_unpack("<Q", snap["kpageflags"])):
        if flags >> KPF_HUGE & 1 and flags >> KPF_COMPOUND_HEAD & 1:
            head = pfn
        elif flags >> KPF_HUGE & 1 and flags >> KPF_COMPOUND_TAIL & 1 and head is not None:
            heads[pfn] = head
            tails.append(pfn)
    assert len(tails) == 16 * 511, len(tails)
    pf = page_fields(prog, "flags", "compound_head|compound_info")
    pfns = np.array(tails, dtype=np.int64)
    raw = b"".join(prog.read(pf.vmemmap + p * pf.size, pf.size) for p in tails)
    words = np.frombuffer(raw, dtype=pf.dtype)["compound_head"]
    # compound_info_has_mask(): one mask for every tail of every 2 MiB folio, not 16 x 511 head pointers.
    assert len({int(w) for w in words}) == 1
    got = head_pfns(prog, pf, words, pfns)
    assert got.tolist() == [heads[p] for p in tails]


def test_first_tail_memcg_word_holds_nr_pages(snap):
    """Item 6: the overlay print_page_owner_memcg()'s PageTail() test exists
    for is in this kernel's memory: each hugetlb folio's first tail page has
    folio->_nr_pages (512) in its memcg_data word, and the debug info shows
    the overlay our tail test keys on."""
    import drgn

    from inspector.decode.memcg import skips_tail_pages

    prog = snap["prog"]
    heads = [pfn for pfn, (flags,) in enumerate(struct.iter_unpack("<Q", snap["kpageflags"]))
             if flags >> KPF_HUGE & 1 and flags >> KPF_COMPOUND_HEAD & 1]
    assert len(heads) == 16
    vmemmap = prog["vmemmap"].value_()
    page = prog.type("struct page")
    words = {drgn.Object(prog, page, address=vmemmap + (h + 1) * page.size).memcg_data.value_() for h in heads}
    assert words == {512}
    assert skips_tail_pages(prog)


def test_pageblock_migratetypes_count_what_pagetypeinfo_counts(snap):
    """Item 2: 8 bits a pageblock (NR_PAGEBLOCK_BITS is now a macro) and
    the isolate bit, counted per zone as pagetypeinfo_showblockcount_print()
    does (online pageblocks of the zone, get_pageblock_migratetype())."""
    from drgn.helpers.linux.mmzone import for_each_online_pgdat, online_section, pfn_to_section, section_nr_to_pfn

    from inspector import kernel as k
    from inspector.decode.owner import block_migratetype, pageblock_layout

    text = snap["pagetypeinfo"]
    order = int(re.search(r"Page block order: (\d+)", text).group(1))
    # "Number of blocks type  Unmovable  Movable ..." then "Node N, zone NAME  counts", once a node.
    names = re.search(r"Number of blocks type(.*)", text).group(1).split()

    def block_counts(text: str) -> dict:
        return {(int(m.group(1)), m.group(2)): [int(x) for x in m.group(3).split()]
                for m in re.finditer(r"^Node\s+(\d+), zone\s+(\w+)((?:\s+\d+)+)\s*$", text, re.M)}

    want, after = block_counts(text), block_counts(snap["pagetypeinfo.after"])
    assert want and all(len(v) == len(names) for v in want.values()) and after.keys() == want.keys()
    prog = snap["prog"]
    bits, mt_mask, iso = pageblock_layout(k.enumerators(prog, "PB_compact_skip"))
    isolate = k.constant(prog, "MIGRATE_ISOLATE")
    pages_per_section = int(section_nr_to_pfn(prog, 1))
    usage_off = prog.type("struct mem_section_usage").member("pageblock_flags").offset
    got = {}
    for pgdat in for_each_online_pgdat(prog):
        nid = pgdat.node_id.value_()
        for zone in pgdat.node_zones:
            spanned = zone.spanned_pages.value_()
            if not spanned:
                continue
            name = zone.name.string_().decode()
            start = zone.zone_start_pfn.value_()
            counts = [0] * len(names)
            for pfn in range(start, start + spanned, 1 << order):
                sec = pfn_to_section(prog, pfn)
                if not online_section(sec):
                    continue
                nbytes = (pages_per_section >> order) * bits // 8
                usemap = np.frombuffer(prog.read(sec.usage.value_() + usage_off, max(8, nbytes)), dtype="<u8")
                idx = np.array([((pfn & (pages_per_section - 1)) >> order) * bits], dtype=np.int64)
                mt = int(block_migratetype(usemap, idx, mt_mask, iso, isolate)[0])
                if mt < len(names):
                    counts[mt] += 1
            got[(nid, name)] = counts
    # The dump was taken between the two reads (CI of 2026-12-07 saw 2 of
    # node 1's DMA32 blocks turn Unmovable between the first read and the pause).
    assert {key: got.get(key) for key in want} in (want, after)
