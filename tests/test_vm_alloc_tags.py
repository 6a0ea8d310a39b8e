"""Allocation tags decoded offline, checked against the kernel's own /proc/allocinfo.

The 6.12 test kernel (fixtures/kernel/alloc-tags.config: memory allocation
profiling on by default) boots with page_owner=on page_table_check=on, so
page_ext carries three clients.  The guest fills 64 MiB of tmpfs and keeps a
process holding 2 MB of anonymous memory; then one shell script reads
/proc/allocinfo twice (A1, A2) with shell builtins only -- no process is
forked, so the reader's own memory does not come and go -- writes a marker
and blocks on a fifo.  The guest loop waits for that script, so nothing else
runs; the host sees the marker, pauses the guest and dumps it.

What must agree, and why:

* line i of A2 is our tag i, with the same text (file:line [module]
  func:name; a text may repeat: a header's inline function has a tag per
  file that includes it);
* our per-CPU sums in the dump equal A2 for the tags whose A1 and A2 lines
  are equal, except allocinfo's own iterator (allocinfo_start(), live only
  while a read prints) and at most 2% moved by kernel threads between the
  read and the pause (a kworker forked, a pool released: listed by -s);
* page_ext holds one ref per live page allocation, which the kernel counts
  as one call and PAGE_SIZE << order bytes (pgalloc_tag_add; a split adds a
  call per piece, no bytes); slab objects, percpu chunks and vmalloc's page
  arrays of a site add calls and bytes page_ext does not see.  Against the
  counters of the same instant (the dump, read by the code the previous
  point holds to the kernel's text): ``refs <= calls`` and ``pages * 4096 <=
  bytes`` for every tag, and when ``refs == calls`` the site allocated only
  pages, so ``pages * 4096 == bytes`` exactly -- which tests the order we give
  each ref -- unless an order is unknown (then within 1023 pages a ref);
* the tmpfs fill is >= 16384 pages tagged at shmem's folio allocation, equal
  to the kernel's bytes and calls for that site;
* our page_owner decoder, on the same dump, has every tagged page allocated,
  with the order we used;
* two refs overwritten in an ELF copy (a wild pointer, a pointer inside a
  tag) are counted and shown as ``<invalid tag 0x...>``, nothing else moves.

A boot with ``sysctl.vm.mem_profiling=0`` (kstrtobool; the kernel then still
reserves the client's page_ext space) and one with ``=never`` (no space: the
entry shrinks by 8 bytes) must give the one-line "inactive" refusal, exit 2,
while the kernel's own /proc/sys/vm/mem_profiling reads 0.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import CLIENTS_ON, inspect, kernel_for, loads, module_kernels
from test_json_conventions import validate
from testvm import TestVM

pytestmark = pytest.mark.vm

WORK = Path(tempfile.gettempdir()) / "pageext-alloc-tag-tests"
PAGE = 4096


INACCURATE = " accurate:no"  # lib/alloc_tag.c alloc_tag_to_text() (b9e2f58ffb84, 6.17 merge window)


def parse_allocinfo(text: str) -> list[tuple[str, int, int]]:
    """(tag text, bytes, calls) per line, in the kernel's order.  A text is not
    unique: an inline function in a header has one tag per file including it.
    The text is codetag_to_text()'s, without the " accurate:no" a flagged tag
    carries (allocinfo_inaccurate() says which)."""
    out = []
    for line in _allocinfo_lines(text):
        m = re.match(r"\s*(-?\d+)\s+(\d+) (.*) $", line)
        assert m, repr(line)
        out.append((m.group(3).removesuffix(INACCURATE), int(m.group(1)), int(m.group(2))))
    return out


def allocinfo_inaccurate(text: str) -> set[int]:
    """The indexes (in the kernel's order) of the tags /proc/allocinfo prints
    with " accurate:no": CODETAG_FLAG_INACCURATE (include/linux/codetag.h)."""
    return {i for i, line in enumerate(_allocinfo_lines(text)) if line.endswith(INACCURATE + " ")}


def _allocinfo_lines(text: str) -> list[str]:
    lines = text.splitlines()
    assert lines[0].startswith("allocinfo - version:"), lines[:2]
    return lines[2:]


def start_blocking(vm: TestVM, script: str) -> None:
    """Queue a guest script without waiting for it (it blocks the guest loop)."""
    cid = uuid.uuid4().hex[:12]
    tmp = vm.share / "cmd" / f".{cid}.tmp"
    tmp.write_text(script + "\n")
    tmp.rename(vm.share / "cmd" / f"{cid}.sh")


@pytest.fixture(scope="module", params=module_kernels("6.12", since=(6, 10)))
def kernel612(request):
    """The 6.12 test kernel in CI; in the matrix, each kernel of the run, those
    before memory allocation profiling (v6.10, 22d407b164ff) skipped."""
    return kernel_for(request.param)


@pytest.fixture(scope="module")
def snap(kernel612):
    vmlinux = str(kernel612 / "vmlinux")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    with TestVM(kernel612, cmdline=CLIENTS_ON, workdir=str(WORK / "vm")) as vm:
        vm.run("dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>/dev/null").check()
        vm.run("mkfifo /tmp/hold; sh -c 'x=$(head -c 2000000 /dev/zero | tr \"\\\\0\" a); "
               "echo $$ > /tmp/holder.pid; read y < /tmp/hold' > /dev/null 2>&1 &").check()
        vm.run("while [ ! -s /tmp/holder.pid ]; do sleep 0.1; done; mkfifo /tmp/block").check()
        # Every file is opened before the first read and stays open until the
        # dump, and the script ends blocked in read(2) on a fifo (opened O_RDWR,
        # which does not block): after the second read nothing is allocated or
        # freed on the script's behalf but one write's transient 9p buffers.
        start_blocking(vm, "exec 3>/share/a.done 4<>/tmp/block 5>/share/a1.txt 6>/share/a2.txt "
                           "7</proc/allocinfo 8</proc/allocinfo; "
                           "while IFS= read -r l; do echo \"$l\"; done <&7 >&5; "
                           "while IFS= read -r l; do echo \"$l\"; done <&8 >&6; "
                           "echo done >&3; read x <&4")
        deadline = time.time() + 600
        marker = vm.share / "a.done"
        while not (marker.exists() and marker.read_text() == "done\n"):
            assert time.time() < deadline, "the guest never finished reading /proc/allocinfo"
            time.sleep(0.05)
        vm.pause()
        core = vm.dump(str(WORK / "core.kdump"), "kdump-zlib")
        elf = vm.dump(str(WORK / "core.elf"), "elf")  # to corrupt (test_garbage_refs_...)
        a1 = parse_allocinfo((vm.share / "a1.txt").read_text())
        a2 = parse_allocinfo((vm.share / "a2.txt").read_text())
        a2_inaccurate = allocinfo_inaccurate((vm.share / "a2.txt").read_text())
        live = loads(inspect("alloc-tags", "--qemu", vm.qmp_path, "-s", vmlinux, "--all", "--json").stdout)
    text = inspect("alloc-tags", core, "-s", vmlinux, "--all", "--json").stdout
    yield {"core": core, "elf": elf, "vmlinux": vmlinux, "a1": a1, "a2": a2, "a2_inaccurate": a2_inaccurate, "doc": loads(text), "live": live,
           "text": text}


def test_json_validates(snap):
    """alloc-tags --json against its shipped JSON Schema (inspector/schemas/alloc-tags.json);
    the tags' addresses are "0x..." strings of x86-64 kernel addresses (the
    tags live in the kernel's and modules' data, above 0xffff800000000000)."""
    raw = json.loads(snap["text"])
    validate("alloc-tags", raw)
    assert raw["tags"] and all(int(r["address"], 16) >= 0xffff800000000000 for r in raw["tags"])


def by_index(snap) -> list[dict]:
    rows = sorted((r for r in snap["doc"]["tags"] if r["index"] is not None), key=lambda r: r["index"])
    assert [r["index"] for r in rows] == list(range(len(rows)))
    return rows


def test_every_kernel_tag_is_decoded_with_its_text(snap):
    rows = by_index(snap)
    assert not any(r["tag"].startswith("<invalid") for r in snap["doc"]["tags"])
    assert [r["tag"] for r in rows] == [t for t, _b, _c in snap["a2"]]
    assert len(rows) > 500
    # CODETAG_FLAG_INACCURATE ("accurate:no", 7.2 on), as the kernel's second read printed it.  The
    # kernel sets it (never clears it) where page_ext is not yet there for a page (early boot,
    # __pgalloc_tag_add()) or a slab's obj_exts vector could not be had (alloc_tagging_slab_alloc_hook()):
    # neither happens in the quiet guest between that read and the pause.
    ours = {r["index"] for r in rows if r["inaccurate"]}
    kernel = snap["a2_inaccurate"]
    assert ours == kernel, (sorted(ours - kernel), sorted(kernel - ours))
    print(f"\n[alloc-tags] accurate:no: the kernel {len(kernel)} tags, ours {len(ours)}")


def test_kernel_counters_read_from_the_dump_equal_allocinfo(snap):
    """Our per-CPU sums from the dump against the kernel's second read.

    Two departures are expected.  /proc/allocinfo counts its own reader:
    allocinfo_start() kzallocs the iterator for the read(2) that prints the
    line and allocinfo_stop() frees it, so that tag reads one call more than
    the idle kernel.  And kernel threads keep working between the read and
    the pause (workqueue pools released, slab pages discarded...): a handful
    of tags that did not move during the two reads may move after them."""
    a1, a2 = snap["a1"], snap["a2"]
    rows = by_index(snap)
    expect = list(a2)
    for i, (tag, b, c) in enumerate(a2):
        if tag.startswith("lib/alloc_tag.c:") and tag.endswith(" func:allocinfo_start"):
            assert c >= 1
            expect[i] = (tag, b - b // c, c - 1)
    stable = [i for i in range(len(a2)) if a1[i] == a2[i]]
    differ = [(a2[i], (rows[i]["kernel_bytes"], rows[i]["kernel_calls"])) for i in stable
              if (rows[i]["kernel_bytes"], rows[i]["kernel_calls"]) != expect[i][1:]]
    print(f"\nkernel counters: {len(a2)} tags, {len(stable)} unchanged between the two reads; "
          f"the dump equals the second read on {len(stable) - len(differ)} of them and differs on "
          f"{len(differ)}: {differ}; moving during the reads: "
          f"{[(a1[i], a2[i][1:]) for i in range(len(a2)) if a1[i] != a2[i]]}")
    assert len(stable) >= 0.95 * len(a2)
    assert len(differ) <= 0.02 * len(stable)


def test_page_ext_refs_against_the_kernel_counters(snap):
    """page_ext refs against the kernel's counters of the same instant (the
    dump: read by the code the previous test holds to /proc/allocinfo)."""
    rows = [r for r in by_index(snap) if r["allocations"]]
    over = [(r["tag"], r["allocations"], r["bytes"], r["kernel_bytes"], r["kernel_calls"]) for r in rows
            if r["allocations"] > r["kernel_calls"] or r["bytes"] > r["kernel_bytes"]]
    # refs == calls: the site allocated pages only, so its bytes are ours exactly,
    # unless some ref's order is unknown (then ours are a lower bound, checked above).
    exact = [r for r in rows if r["allocations"] == r["kernel_calls"]]
    known = [r for r in exact if not r["orders_assumed"]]
    wrong = [(r["tag"], r["allocations"], r["bytes"], r["kernel_bytes"]) for r in known
             if r["bytes"] != r["kernel_bytes"]]
    # A ref of unknown order counts one page; it may hide up to MAX_ORDER_NR_PAGES - 1 more
    # (x86-64: 1024-page blocks).
    wrong += [(r["tag"], r["allocations"], r["bytes"], r["kernel_bytes"]) for r in exact if r["orders_assumed"]
              and not r["bytes"] <= r["kernel_bytes"] <= r["bytes"] + r["orders_assumed"] * 1023 * PAGE]
    s = snap["doc"]["summary"]
    print(f"\npage_ext: {s['tagged']} refs, {s['pages']} pages in {len(rows)} tags (orders: {s['order_source']}); "
          f"{len(exact)} tags ({sum(r['pages'] for r in exact)} pages) have refs == the kernel's calls; bytes "
          f"compared on {len(known)} ({sum(r['pages'] for r in known)} pages, every order known): {len(wrong)} "
          f"differ {wrong[:5]}; unknown orders in "
          f"{[(r['tag'], r['orders_assumed'], r['bytes'], r['kernel_bytes']) for r in rows if r['orders_assumed']]}"
          f"; tags with more refs or bytes than the kernel counts: {over[:5]}; mixed sites (refs < calls): "
          f"{[(r['tag'], r['allocations'], r['kernel_calls'], r['bytes'], r['kernel_bytes']) for r in rows if r not in exact][:8]}")
    assert s["invalid"] == 0 and s["empty"] == 0
    assert not over
    assert not wrong
    # Substance: most tags with pages are page-only sites, and they hold most pages.
    assert len(known) >= 0.5 * len(rows)
    assert sum(r["pages"] for r in exact) >= 0.9 * s["pages"]
    assert s["order_source"].get("assumed_order_0", 0) <= 0.001 * s["tagged"]


def test_tmpfs_fill_is_tagged_at_shmem(snap):
    a2 = snap["a2"]
    shmem = [r for r in by_index(snap) if r["file"] == "mm/shmem.c" and r["pages"] >= 16384]
    assert len(shmem) == 1, [(r["tag"], r["pages"]) for r in snap["doc"]["tags"] if r["file"] == "mm/shmem.c"]
    r = shmem[0]
    assert (r["bytes"], r["allocations"]) == a2[r["index"]][1:]
    assert r["pages"] >= 16384 and r["pages"] * PAGE == a2[r["index"]][1]


def test_tagged_pages_are_page_owner_allocations(snap):
    from inspector import PageExt
    from inspector.clients.alloc_tag import SOURCES
    from inspector.decode.owner import ALLOCATED

    pe = PageExt.open(snap["core"], vmlinux=snap["vmlinux"])
    po = {r.pfn: r.order for r in pe.client("page_owner").records(ALLOCATED)}
    at = pe.client("page_alloc_tagging")
    tagged = {pfn: (order, SOURCES[src]) for _a, _n, pfns, _refs, orders, srcs in at.chunks()
              for pfn, order, src in zip(pfns.tolist(), orders.tolist(), srcs.tolist())}
    not_owned = [p for p in tagged if p not in po]
    order_differs = [(p, tagged[p], po[p]) for p in tagged if p in po and po[p] != tagged[p][0]]
    untagged = [p for p in po if p not in tagged]
    print(f"\nvs page_owner: {len(tagged)} tagged pages, {len(po)} page_owner allocated heads; tagged but not "
          f"allocated {len(not_owned)}, order differs {len(order_differs)} {order_differs[:3]}, allocated but "
          f"untagged {len(untagged)} (allocated before page_ext was initialised)")
    assert not not_owned
    assert not order_differs


def test_live_guest_agrees_with_its_dump(snap):
    assert snap["live"] == snap["doc"]


def test_one_pfn(snap):
    r = next(r for r in snap["doc"]["tags"] if r["file"] == "mm/shmem.c" and r["pages"] >= 16384)
    from inspector import PageExt

    at = PageExt.open(snap["core"], vmlinux=snap["vmlinux"]).client("page_alloc_tagging")
    pfn = next(p for _a, _n, pfns, refs, _o, _s in at.chunks() for p, ref in zip(pfns.tolist(), refs.tolist())
               if ref == r["address"])
    text = inspect("alloc-tags", snap["core"], "-s", snap["vmlinux"], "--pfn", hex(pfn), "--json").stdout
    validate("alloc-tags", json.loads(text))  # the shipped JSON Schema, on the printed text
    d = loads(text)
    assert d["state"] == "tagged" and d["tag"] == r["tag"]
    text = inspect("alloc-tags", snap["core"], "-s", snap["vmlinux"], "--pfn", str(pfn)).stdout
    assert r["tag"] in text
    proc = inspect("alloc-tags", snap["core"], "-s", snap["vmlinux"], "--pfn", "0x7fffffffff", check_rc=2)
    assert len(proc.stderr.strip().splitlines()) == 1


def test_garbage_refs_are_counted_and_shown_invalid(snap):
    """Overwrite two tagged pages' refs in an ELF copy of the dump, one with a
    wild pointer and one with an address inside a tag: both are counted and
    shown as <invalid tag 0x...>, exit 0, and every other tag is unchanged."""
    from drgn.helpers.linux.mm import follow_phys

    from inspector import PageExt
    from test_vm_owner import elf_offset

    elf, vmlinux = snap["elf"], snap["vmlinux"]
    pe = PageExt.open(elf, vmlinux=vmlinux)
    at = pe.client("page_alloc_tagging")
    shmem = next(r for r in snap["doc"]["tags"] if r["file"] == "mm/shmem.c" and r["pages"] >= 16384)
    pfns = [p for _a, _n, ps, refs, _o, _s in at.chunks() for p, ref in zip(ps.tolist(), refs.tolist())
            if ref == shmem["address"]][100:102]
    wild, inside = 0xDEAD000000001000, shmem["address"] + 8
    with open(elf, "r+b") as f:
        for pfn, bad in zip(pfns, (wild, inside)):
            virt = pe.entry_address(pfn) + at.client.offset
            f.seek(elf_offset(f, follow_phys(pe.prog["init_mm"].address_of_(), virt).value_()))
            assert struct.unpack("<Q", f.read(8))[0] == shmem["address"]
            f.seek(-8, 1)
            f.write(struct.pack("<Q", bad))
    proc = inspect("alloc-tags", elf, "-s", vmlinux, "--json", check_rc=1)  # corrupt refs: exit 1
    doc = loads(proc.stdout)
    rows = {r["tag"]: r for r in doc["tags"]}
    assert rows[f"<invalid tag {wild:#x}>"]["allocations"] == 1
    assert rows[f"<invalid tag {inside:#x}>"]["allocations"] == 1
    assert rows[shmem["tag"]]["allocations"] == shmem["allocations"] - 2
    before = {r["tag"]: r["allocations"] for r in snap["doc"]["tags"] if r["allocations"]}
    after = {t: r["allocations"] for t, r in rows.items() if not t.startswith("<invalid")}
    assert {t: n for t, n in after.items() if t != shmem["tag"]} == \
        {t: n for t, n in before.items() if t != shmem["tag"]}
    assert doc["summary"]["invalid"] == 2 and doc["summary"]["invalid_tags"] == 2
    assert proc.stderr.strip() == "pageext-inspect: 2 page_ext entries hold 2 pointer(s) that are not allocation tags"
    text = inspect("alloc-tags", elf, "-s", vmlinux, "--pfn", hex(pfns[0])).stdout
    assert f"<invalid tag {wild:#x}>" in text
    table = inspect("alloc-tags", elf, "-s", vmlinux, check_rc=1).stdout
    assert f"<invalid tag {inside:#x}>" in table and "2 invalid (2 distinct pointers)" in table


@pytest.mark.parametrize("setting", ["0", "never"])
def test_profiling_off_at_boot_is_refused(kernel612, setting, tmp_path):
    vmlinux = str(kernel612 / "vmlinux")
    with TestVM(kernel612, cmdline=f"{CLIENTS_ON} sysctl.vm.mem_profiling={setting}",
                workdir=str(WORK / f"vm-{setting}")) as vm:
        assert vm.run("cat /proc/sys/vm/mem_profiling").check().out.strip() == "0"
        proc = inspect("alloc-tags", "--qemu", vm.qmp_path, "-s", vmlinux, check_rc=2)
        assert "inactive in this boot" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        clients = loads(inspect("clients", "--qemu", vm.qmp_path, "-s", vmlinux, "--json").stdout)["clients"]
        row = next(c for c in clients if c["name"] == "page_alloc_tagging")
        assert row["state"] != "active" and row["active"] is False
        doc = loads(inspect("--qemu", vm.qmp_path, "-s", vmlinux, "--json", "--no-progress").stdout)
        # =0 keeps the client's 8 bytes per page (need() is mem_profiling_support), =never drops them:
        # the kernel's own total says which.
        m = re.search(r"allocated (\d+) bytes of page_ext", vm.dmesg())
        assert m and int(m.group(1)) == doc["page_ext"]["kernel_total_usage"]
        active = sum(c["size"] for c in doc["page_ext"]["clients"] if c["active"]) + 8
        assert doc["page_ext"]["entry_size"] == active + (8 if setting == "0" else 0)


def test_min_bytes_and_its_deprecated_name(snap):
    """--min-bytes N keeps the tags holding at least N page_ext bytes, in the
    order of the full list; --threshold N, its old name, does the same and
    says on stderr that it is deprecated (issue 20)."""
    core, vmlinux = snap["core"], snap["vmlinux"]
    full = loads(inspect("alloc-tags", core, "-s", vmlinux, "--json").stdout)["tags"]
    n = sorted(r["bytes"] for r in full)[len(full) // 2]
    kept = loads(inspect("alloc-tags", core, "-s", vmlinux, "--json", "--min-bytes", str(n)).stdout)["tags"]
    assert kept == [r for r in full if r["bytes"] >= n] and 0 < len(kept) < len(full)
    old = inspect("alloc-tags", core, "-s", vmlinux, "--json", "--threshold", str(n))
    assert loads(old.stdout)["tags"] == kept
    assert "--threshold is deprecated: use --min-bytes" in old.stderr
