#!/usr/bin/env python3
"""Write the kernel x feature matrix from test results (JUnit XML), never by hand.

Design.  scripts/matrix.sh runs the VM tests over every kernel
(``scripts/test.sh --kernels all``) and test_vm_distro once per Debian stock
kernel, each run writing JUnit XML.  This script reads those files and puts
every test case in one cell: its *feature* (a row, from the module and test
name: :data:`FEATURES`) and its *kernel* (a column: the ``[VERSION]`` in a
parametrized test's id, else the module's own kernel, :data:`MODULE_KERNEL`,
else the stock kernel a distro run names).  A cell reads

* ``Y`` -- every case in it passed,
* ``N (k/n)`` -- k of its n cases failed or errored,
* ``not in this kernel: REASON`` -- every case in it was skipped for a reason
  that starts with "not in this kernel" (the tests say why),
* ``n/a`` -- nothing to cover: a stock kernel's features beyond the
  first row (no client is on), the first row on a kernel built here,
* ``-`` -- no test covers it on this kernel (yet).

With ``--readme README.md`` the table replaces what stands between the
``<!-- matrix:begin -->`` and ``<!-- matrix:end -->`` lines, with the date,
the command, and the time the run took; without it the table is printed.

    scripts/matrix.py --seconds 5400 --readme README.md results/*.xml
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

# Columns, in order: built kernels, then Debian's stock ones ("stock X").
KERNELS = ("5.10", "6.1", "6.12", "7.2", "7.3", "stock 5.10", "stock 6.1", "stock 7.2", "arm64 6.12 4K",
           "arm64 6.12 64K", "arm64 7.3 4K", "arm64 7.3 64K", "i386 6.1")

# (module, test-name pattern) -> feature, first match wins.
FEATURES = [
    (r"test_vm_(distro|72_stock)", r".", "stock kernel: page_ext empty, owner refuses"),
    ("test_vm_arm64", r"table_check", "table-check"),
    ("test_vm_arm64", r"hot_(add|remove)", "hot-add / hot-remove exact"),
    ("test_vm_arm64", r"owner_(debugfs|live)", "owner --format debugfs"),  # before kdump: [7.3-64k-kdump]
    ("test_vm_arm64", r"kdump|elf_and_kdump|qemu_kdump", "ELF and kdump dumps, kdump capture"),
    ("test_vm_arm64", r"top_is", "top vs page_owner_sort / page_owner_stacks"),
    ("test_vm_arm64", r"validate", "simulate validate"),
    ("test_vm_arm64", r".", "locate + verify, live QMP"),
    (r"test_vm_(inspect|versions)", r"hot_(add|remove)|invalid_bit", "hot-add / hot-remove exact"),
    (r"test_vm_(inspect|versions)", r"table_check", "table-check"),
    (r"test_vm_(inspect|versions)", r".", "locate + verify, live QMP"),
    ("test_vm_kdump", r".", "ELF and kdump dumps, kdump capture"),
    ("test_vm_owner_sort", r".", "top vs page_owner_sort / page_owner_stacks"),
    ("test_vm_owner", r"table_check", "table-check"),
    ("test_vm_owner", r"memcg", "memcg lines"),
    ("test_vm_owner", r".", "owner --format debugfs"),
    ("test_vm_alloc_tags", r".", "alloc-tags vs /proc/allocinfo"),
    ("test_vm_page_idle", r".", "page-idle"),
    ("test_vm_trace", r".", "trace (bcc)"),
    ("test_vm_validate", r".", "simulate validate"),
    ("test_vm_history", r".", "snapshot / diff / watch"),
    ("test_vm_drgn", r".", "drgn plugin"),
    (r"test_vm_(live|hostile|bounds)", r".", "live targets, damaged dumps"),
    (r"test_vm_7x_\w+", r"table_check", "table-check"),
    (r"test_vm_7x_\w+", r"stack|owner|pageblock|order", "owner --format debugfs"),
    (r"test_vm_7x_\w+", r"memcg", "memcg lines"),
    (r"test_vm_7x_\w+", r"idle", "page-idle"),
    (r"test_vm_7x_\w+", r"tag", "alloc-tags vs /proc/allocinfo"),
    (r"test_vm_7x_\w+", r"trace", "trace (bcc)"),
    (r"test_vm_7x_\w+", r"iommu|client", "locate + verify, live QMP"),
]
# The kernel of a module's unparametrized tests.
MODULE_KERNEL = {"test_vm_alloc_tags": "6.12", "test_vm_history": "6.12", "test_vm_page_idle": "i386 6.1",
                 "test_vm_distro": "stock 6.1", "test_vm_72_stock": "stock 7.2",
                 "test_vm_7x_decode": "7.3", "test_vm_7x_clients": "7.3"}
# The kernel of an unparametrized test written for one kernel other than its module's.
TEST_KERNEL = {"test_612_memcg_oops_and_we_still_read_the_dump": "6.12"}
NOT_IN_KERNEL = "not in this kernel"
STOCK_ROW = FEATURES[0][2]


# page_idle's bits are in page_ext on 32-bit kernels only; 64-bit ones keep
# them in page->flags (33c3fc71c8cf, v4.3).
PAGE_IDLE_64BIT = "not in this kernel: 64-bit (page->flags)"


def not_applicable(feature: str, kernel: str) -> str | None:
    """Why a cell no test covers has nothing to cover: a Debian stock kernel
    turns no page_ext client on (its page_ext is empty: the first row is all
    there is to check), a kernel built here turns them on, and page_idle uses
    page_ext on 32-bit kernels only (every column but i386)."""
    stock = kernel.startswith("stock ")
    if stock != (feature == STOCK_ROW):
        return "n/a"
    if feature == "page-idle" and not kernel.startswith("i386"):
        return PAGE_IDLE_64BIT
    return None


def feature_of(module: str, name: str) -> str | None:
    for mod, pat, feature in FEATURES:
        if re.fullmatch(mod, module) and re.search(pat, name):
            return feature
    return None


def kernel_of(module: str, name: str, stock: str | None) -> str:
    if stock:
        return f"stock {stock}"
    if module == "test_vm_arm64":  # tests/test_vm_arm64.py: [4k...] or [64k...] for 6.12, [7.3-4k...] for 7.3
        m = re.search(r"\[(?:(\d+\.\d+)-)?(4k|64k)", name)
        return f"arm64 {m.group(1) or '6.12'} {m.group(2).upper()}" if m else "arm64 6.12 4K"
    m = re.search(r"\[(?:[^\]]*-)?(\d+\.\d+)(?:-[^\]]*)?\]$", name)
    if m and m.group(1) in KERNELS:
        return m.group(1)
    return TEST_KERNEL.get(name) or MODULE_KERNEL.get(module, "6.1")


def read(paths: list[Path]) -> dict:
    """{(feature, kernel): [(outcome, message)]} from JUnit files; a file named
    ``stock-VERSION.xml`` is a test_vm_distro run on that stock kernel.  A
    test case in several files counts once, as the last file has it (a rerun
    given after the run it repeats) -- unless the later file only skipped it
    for another reason than "not in this kernel" (a run that did not build
    that kernel, e.g. CI without arm64 64K): such a skip never hides a result."""
    latest: dict = {}  # (file kind, module, test id) -> its result: a later file's rerun supersedes
    for path in paths:
        m = re.fullmatch(r"stock-(\d+\.\d+)\.xml", path.name)
        stock = m.group(1) if m else None
        for case in ET.parse(path).iter("testcase"):
            module = case.get("classname", "").rsplit(".", 1)[-1]
            name = case.get("name", "")
            feature = feature_of(module, name)
            if feature is None:
                continue
            outcome, message = "passed", ""
            for tag in ("failure", "error", "skipped"):
                el = case.find(tag)
                if el is not None:
                    outcome, message = tag, el.get("message", "")
                    break
            earlier = latest.get((stock, module, name))
            if (outcome == "skipped" and NOT_IN_KERNEL not in message and earlier is not None
                    and earlier[2] != "skipped"):
                continue
            latest[stock, module, name] = (feature, kernel_of(module, name, stock), outcome, message)
    cells: dict = defaultdict(list)
    for feature, kernel, outcome, message in latest.values():
        cells[feature, kernel].append((outcome, message))
    return cells


def cell(results: list, feature: str = "", kernel: str = "") -> str:
    if not results:
        return not_applicable(feature, kernel) or "-"
    bad = sum(o in ("failure", "error") for o, _ in results)
    if bad:
        return f"N ({bad}/{len(results)})"
    ran = [r for r in results if r[0] == "passed"]
    if ran:
        return "Y"
    reasons = sorted({re.sub(r"^Skipped: ", "", m) for _, m in results})
    if all(NOT_IN_KERNEL in r for r in reasons):
        return reasons[0][reasons[0].index(NOT_IN_KERNEL):]
    return "skipped: " + "; ".join(reasons)[:80]


def table(cells: dict) -> str:
    features = list(dict.fromkeys(f for _, _, f in FEATURES))
    cols = [k for k in KERNELS if any(kk == k for _, kk in cells)]
    lines = ["| feature | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for f in features:
        if not any(ff == f for ff, _ in cells):
            continue
        lines.append(f"| {f} | " + " | ".join(cell(cells.get((f, k), []), f, k) for k in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("xml", nargs="+", type=Path)
    ap.add_argument("--readme", type=Path, help="replace the matrix between its markers in this file")
    ap.add_argument("--seconds", type=float, help="how long the run took")
    ap.add_argument("--command", default="scripts/matrix.sh")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.xml if not p.is_file()]
    if missing:
        print(f"matrix: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    text = table(read(args.xml))
    took = f", {args.seconds / 60:.0f} min" if args.seconds else ""
    block = (f"Written by `{args.command}` on {dt.date.today().isoformat()}{took}, from the test results "
             f"(Y: every test of the cell passed; N (k/n): k of n failed; n/a: nothing to cover: a stock kernel turns no page_ext client on, so only its first row applies, and the kernels built here turn them on; '64-bit (page->flags)': page_idle keeps its bits in page_ext on 32-bit kernels only, 33c3fc71c8cf; -: no test covers it yet).\n\n{text}\n")
    if not args.readme:
        print(block)
        return 0
    doc = args.readme.read_text()
    begin, end = "<!-- matrix:begin -->", "<!-- matrix:end -->"
    if begin not in doc or end not in doc:
        print(f"matrix: {args.readme} has no {begin} ... {end} lines", file=sys.stderr)
        return 2
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    args.readme.write_text(f"{head}{begin}\n{block}{end}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
