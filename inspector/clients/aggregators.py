"""The kernel's own page_owner aggregators, reproduced offline for ``top --format``.

``page_owner_sort`` -- tools/vm/page_owner_sort.c (v6.1; tools/mm/ from v6.2).
It reads the text of /sys/kernel/debug/page_owner and, with ``--cull KEY``,
prints one group a key.  Both v6.1's and v6.12's copies, for the single-key
culls ``stacktrace``, ``pid``, ``tgid`` and ``name``, do the same:

* read_block(): a block is the lines up to an empty line; lines starting with
  ``PFN`` are left out (kept aside for the ``allocator`` cull); an unfinished
  last block is dropped.
* add_list(): ``pid``/``tgid``/``comm``/``order`` come from the block with POSIX
  regexes (``pid\\s*([0-9]*),``, ``tgid\\s*([0-9]*) ``,
  ``tgid\\s*[0-9]*\\s*\\((.*)\\),\\s*ts``, ``order\\s*([0-9]*),``); strtol() failing
  gives -1; a block counts 1 time and ``1 << order`` pages; its "stacktrace" is
  everything after the first line (the stack, and any migrate-reason or memcg
  lines that follow it).  v6.1 first folds a block identical to the previous
  one into it (num++, page_num += ...), which changes no group's sums.
* main(): qsort() by the cull key (strcmp() for stacktrace and name,
  subtraction for pid and tgid), fold equal neighbours, then qsort() by times,
  descending (``--cull`` sets compare_num/SORT_DESC when no sort is given).
  glibc's qsort() is a stable merge sort when it can allocate its buffer, so
  ties keep the key order.
* output: ``"%d times, %d pages"``, then ``", PID %d"``, ``", TGID %d"`` or
  ``", task_comm_name: %s"``, then for stacktrace ``":\\n%s"``, then ``"\\n"``.

We feed it the debugfs text our decoder prints for the target
(byte-identical to the kernel's), so the output is what page_owner_sort would
write for the same records.

``show_stacks`` -- /sys/kernel/debug/page_owner_stacks/show_stacks (v6.9,
765973a09803 "mm,page_owner: display all stacks and their count").  The kernel
keeps, per stack depot record used by an allocation, ``stack_record->count``:
set to 1 when the stack is first added to the ``stack_list`` (newest first,
after the dummy and failure stacks set up in init_page_owner()), plus
``1 << order`` on every __set_page_owner(), minus ``1 << order`` on every
__reset_page_owner() unless the page carries ``early_handle`` (pages allocated
before page_owner was initialised are never counted).  stack_print() prints,
for each list entry with ``count - 1 >= 1`` and ``>= count_threshold``, every
frame as ``" %pS\\n"`` and ``"nr_base_pages: %d\\n\\n"``.  We walk the same list in
the target's memory and print the same; ``--min-pages`` plays count_threshold.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable, Iterator, Optional

import drgn

from ..errors import ClientError, CorruptError, TargetError, UsageError

# top --by KEY -> page_owner_sort --cull KEY
CULL = {"stack": "stacktrace", "pid": "pid", "tgid": "tgid", "comm": "name"}

# The patterns page_owner_sort compiles with REG_EXTENDED | REG_NEWLINE.  As
# bytes patterns, Python's \s is ASCII whitespace ([[:space:]] in glibc's C
# locale) and "." stops at a newline, like REG_NEWLINE.
_ORDER = re.compile(rb"order\s*([0-9]*),")
_PID = re.compile(rb"pid\s*([0-9]*),")
_TGID = re.compile(rb"tgid\s*([0-9]*) ")
_COMM = re.compile(rb"tgid\s*[0-9]*\s*\((.*)\),\s*ts")
_INT_MAX = (1 << 31) - 1


def _strtol(pattern: re.Pattern, block: bytes) -> int:
    """get_pid()/get_tgid(): the digits the pattern captures, -1 if none."""
    m = pattern.search(block)
    if not m or not m.group(1):
        return -1
    return int(m.group(1))


def _page_num(block: bytes) -> int:
    """get_page_num(): 1 << order, 0 for a missing or out-of-range order."""
    m = _ORDER.search(block)
    if not m or not m.group(1):
        return 0
    order = int(m.group(1))
    return 0 if order > 64 else 1 << order


def _blocks(texts: Iterable[str]) -> Iterator[bytes]:
    """read_block() over the concatenated debugfs text (latin-1 characters)."""
    pending: list[bytes] = []
    tail = b""
    for text in texts:
        data = tail + text.encode("latin-1")
        lines = data.split(b"\n")
        tail = lines.pop()  # an unfinished line waits for the next record
        for line in lines:
            if not line:  # fgets() read just "\n": the block ends
                yield b"".join(pending)
                pending = []
            elif not line.startswith(b"PFN"):
                pending.append(line + b"\n")
    # EOF: read_block() returns -1 and the block in progress is dropped.


def page_owner_sort(texts: Iterable[str], by: str) -> list[dict]:
    """Groups as page_owner_sort ``--cull CULL[by]`` prints them, in its order.

    Each row: ``key`` (bytes for stack and comm, int for pid and tgid),
    ``times``, ``pages`` and ``text`` (the group's output bytes).

    :param texts: the debugfs text (``PageOwner.debugfs_bytes()`` as latin-1), chunk by chunk
    :param by: a key of :data:`CULL`
    :return: the rows
    """
    if by not in CULL:
        raise UsageError(f"page_owner_sort has no cull for {by!r} (it culls by: {', '.join(CULL)})")
    times: dict = defaultdict(int)
    pages: dict = defaultdict(int)
    for block in _blocks(texts):
        if by == "stack":
            nl = block.find(b"\n")
            key = block[nl + 1:] if nl >= 0 else b""
        elif by == "pid":
            key = _strtol(_PID, block)
        elif by == "tgid":
            key = _strtol(_TGID, block)
        else:
            m = _COMM.search(block)
            key = m.group(1).split(b"\0", 1)[0] if m else b""
        times[key] += 1
        pages[key] += _page_num(block)
    keys = sorted(times)  # strcmp() order for bytes, numeric for pid/tgid
    keys.sort(key=lambda k: -times[k])  # stable, like glibc's merge sort
    rows = []
    for k in keys:
        head = b"%d times, %d pages" % (_c_int(times[k]), _c_int(pages[k]))
        if by == "stack":
            text = head + b":\n" + k + b"\n"
        elif by == "pid":
            text = head + b", PID %d\n" % k
        elif by == "tgid":
            text = head + b", TGID %d\n" % k
        else:
            text = head + b", task_comm_name: " + k + b"\n"
        rows.append({"key": k, "times": times[k], "pages": pages[k], "text": text})
    return rows


def _c_int(n: int) -> int:
    """An int counter as C's %d prints it after wrapping."""
    n &= 0xFFFFFFFF
    return n - (1 << 32) if n > _INT_MAX else n


def stack_list(prog: drgn.Program) -> Iterator[tuple[int, int, list[int], int]]:
    """(stack_record address, refcount, frames, handle) of each entry of
    page_owner's ``stack_list``, in list order (what show_stacks walks).

    :param prog: the target
    :return: iterator of ``(address, refcount, frames, handle)``
    """
    try:
        head = prog.object("stack_list", drgn.FindObjectFlags.VARIABLE, "page_owner.c")
    except (LookupError, ValueError):
        raise ClientError("this kernel keeps no per-stack page counts (page_owner_stacks/show_stacks "
                          "is v6.9+)") from None
    try:
        stack = head.read_()
        seen = set()
        while stack.value_():
            addr = stack.value_()
            if addr in seen:
                raise CorruptError(f"page_owner's stack_list loops at {addr:#x}")
            seen.add(addr)
            rec = stack.stack_record.read_()
            if rec.value_():
                size = rec.size.value_()
                count = rec.count.refs.counter.value_()
                if size > rec.entries.type_.length:
                    raise CorruptError(f"stack_record {rec.value_():#x} claims {size} frames")
                raw = prog.read(rec.entries.address_of_().value_(), size * 8)
                pcs = [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]
                handle = rec.handle.handle.value_() if rec.handle.type_.unaliased_kind() == drgn.TypeKind.UNION \
                    else rec.handle.value_()
                yield rec.value_(), count, pcs, handle
            stack = stack.next.read_()
    except drgn.FaultError as e:
        raise TargetError(f"cannot read page_owner's stack_list: {e}") from None


def show_stacks(po, threshold: int = 0) -> Iterator[dict]:
    """stack_print() of each stack_list entry it would print: ``key`` (frames as
    %pS), ``pages`` (nr_base_pages) and ``text`` (its bytes as latin-1 str).

    :param po: a :class:`~inspector.clients.page_owner.PageOwner`
    :param threshold: leave out stacks with fewer pages
    :return: iterator of rows
    """
    for _rec, count, pcs, _handle in stack_list(po.prog):
        nr = _c_int(count - 1)
        if nr < 1 or nr < threshold:
            continue
        lines = tuple(po.symbolize(pc) for pc in pcs)
        text = "".join(f" {line}\n" for line in lines) + f"nr_base_pages: {nr}\n\n"
        yield {"key": lines, "pages": nr, "text": text}


def show_handles(po, threshold: int = 0, with_stacks: bool = False) -> Iterator[dict]:
    """page_owner_stacks/show_handles, or with ``with_stacks`` show_stacks_handles.

    Added in v6.19 (Mauricio Faria de Oliveira, "mm/page_owner: add debugfs
    file 'show_handles'" and "... 'show_stacks_handles'"): stack_print()
    walks the same stack_list as show_stacks, and prints per entry either
    ``handle: %d`` and ``nr_base_pages: %d`` (show_handles: entries with
    count - 1 >= 1 and >= count_threshold), or every frame as ``" %pS"`` then
    ``handle: %d`` (show_stacks_handles: every entry with a stack record, no
    threshold), each entry closed by a blank line.  The handle is
    ``stack_record->handle.handle``, printed with %d.  A kernel older than
    6.19 keeps the same list (from 6.9), so the same text is produced for it.

    :param po: a :class:`~inspector.clients.page_owner.PageOwner`
    :param threshold: leave out stacks with fewer pages (show_handles only)
    :param with_stacks: show_stacks_handles instead
    :return: iterator of rows: ``key`` (the handle), ``pages``, ``text`` (bytes)
    """
    for _rec, count, pcs, handle in stack_list(po.prog):
        nr = _c_int(count - 1)
        if not with_stacks and (nr < 1 or nr < threshold):
            continue
        h = handle - (1 << 32) if handle >= 1 << 31 else handle
        if with_stacks:
            text = "".join(f" {po.symbolize(pc)}\n" for pc in pcs) + f"handle: {h}\n\n"
        else:
            text = f"handle: {h}\nnr_base_pages: {nr}\n\n"
        yield {"key": handle, "pages": nr, "text": text.encode("latin-1")}


def limit_rows(rows: Iterable[dict], threshold: int, limit: Optional[int]) -> list[dict]:
    """The first ``limit`` rows with at least ``threshold`` pages.

    :param rows: rows with a ``pages`` key, in order
    :param threshold: leave out rows with fewer pages
    :param limit: keep at most this many (0 or None: all)
    :return: the rows kept

    >>> limit_rows([{"pages": 9}, {"pages": 1}, {"pages": 5}, {"pages": 4}], 2, 2)
    [{'pages': 9}, {'pages': 5}]
    """
    out = []
    for r in rows:
        if r["pages"] < threshold:
            continue
        out.append(r)
        if limit and len(out) >= limit:
            break
    return out
