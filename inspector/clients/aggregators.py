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


def _blocks(texts: Iterable[str]) -> Iterator[tuple[bytes, bytes]]:
    """read_block() over the concatenated debugfs text (latin-1 characters):
    each block and the last ``PFN`` line read (its ext_buf)."""
    pending: list[bytes] = []
    tail = pfn = b""
    for text in texts:
        data = tail + text.encode("latin-1")
        lines = data.split(b"\n")
        tail = lines.pop()  # an unfinished line waits for the next record
        for line in lines:
            if not line:  # fgets() read just "\n": the block ends
                yield b"".join(pending), pfn
                pending = []
            elif line.startswith(b"PFN"):
                pfn = line
            else:
                pending.append(line + b"\n")
    # EOF: read_block() returns -1 and the block in progress is dropped.


# page_owner_sort's key names (get_arg_type(): the long name and its short
# alias, v5.19+; "free"/"free_ts" only in copies that still parse free_ts,
# Debian's 6.1 -- the 6.12 copy has neither).  "times" and "pages" are ours:
# the orders of its legacy -t and -m flags, which --sort has no key for.
SORT_KEYS = {"pid": "pid", "p": "pid", "tgid": "tgid", "tg": "tgid", "name": "name", "n": "name",
             "stacktrace": "stacktrace", "st": "stacktrace", "txt": "txt", "T": "txt",
             "alloc_ts": "alloc_ts", "at": "alloc_ts", "free_ts": "free_ts", "ft": "free_ts",
             "allocator": "allocator", "ator": "allocator", "times": "times", "pages": "pages"}
CULL_KEYS = {"pid": "pid", "p": "pid", "tgid": "tgid", "tg": "tgid", "name": "name", "n": "name",
             "stacktrace": "stacktrace", "st": "stacktrace", "free": "free", "f": "free",
             "allocator": "allocator", "ator": "allocator"}
# compare_cull_condition()'s order of the cull keys.
_CULL_ORDER = ("stacktrace", "pid", "tgid", "name", "free", "allocator")
_TS = re.compile(rb"ts\s*([0-9]*)\s*ns")         # 6.12's ts_nsec_pattern
_TS_61 = re.compile(rb"ts\s*([0-9]*)\s*ns,")     # 6.1's
_FREE_TS = re.compile(rb"free_ts\s*([0-9]*)\s*ns")
_CMA, _SLAB, _VMALLOC, _OTHERS = 1 << 1, 1 << 2, 1 << 3, 1 << 4
_U64 = (1 << 64) - 1


def parse_sort(spec: Optional[str]) -> tuple[tuple[str, int], ...]:
    """``--sort``'s ``[+|-]key[,[+|-]key[,...]]`` as parse_sort_args() reads it.

    >>> parse_sort("-pid,at")
    (('pid', -1), ('alloc_ts', 1))

    :param spec: the option's value (None: no order given)
    :return: (key, sign) pairs; sign -1 is descending
    """
    if spec is None:
        return ()
    out = []
    for arg in spec.split(","):
        sign = -1 if arg[:1] == "-" else 1
        key = SORT_KEYS.get(arg[1:] if arg[:1] in "+-" and arg else arg)
        if key is None:
            raise UsageError(f"unknown --sort key {arg!r} (page_owner_sort's: {', '.join(SORT_KEYS)})")
        out.append((key, sign))
    return tuple(out)


def parse_cull(spec: Optional[str]) -> frozenset:
    """``--cull``'s comma-separated keys as parse_cull_args() reads them.

    >>> sorted(parse_cull("pid,n"))
    ['name', 'pid']

    :param spec: the option's value
    :return: the cull keys
    """
    if spec is None:
        return frozenset()
    out = set()
    for arg in spec.split(","):
        if arg not in CULL_KEYS:
            raise UsageError(f"unknown --cull key {arg!r} (page_owner_sort's: {', '.join(CULL_KEYS)})")
        out.add(CULL_KEYS[arg])
    return frozenset(out)


def _allocator(block: bytes, pfn_line: bytes) -> int:
    """get_allocator(): CMA and slab from the PFN line, vmalloc when the line
    before __vmalloc_node_range's holds alloc_pages."""
    a = (_CMA if b"CMA" in pfn_line else 0) | (_SLAB if b"slab" in pfn_line else 0)
    at = block.find(b"__vmalloc_node_range")
    if at >= 0:
        t = block.rfind(b"\n", 0, at)
        first = block.rfind(b"\n", 0, max(t, 0)) + 1
        hit = block.find(b"alloc_pages", first)
        if 0 <= hit < at:
            a |= _VMALLOC
    return a or _OTHERS


def _allocator_text(a: int) -> bytes:
    """print_allocator()."""
    return b"allocated by " + b"".join(name for bit, name in ((_CMA, b"CMA "), (_SLAB, b"SLAB "),
                                                                (_VMALLOC, b"VMALLOC "), (_OTHERS, b"OTHERS "))
                                        if a & bit)


class _Entry:
    """One struct block_list."""
    __slots__ = ("txt", "stacktrace", "pid", "tgid", "name", "alloc_ts", "free_ts", "allocator", "times", "pages")


def _entries(texts: Iterable[str], keep_ts: bool) -> tuple[list[_Entry], bool]:
    """add_list() over read_block(); ``keep_ts``: 6.12 strips the ts digits
    from the text unless the first sort key is alloc_ts."""
    out: list[_Entry] = []
    legacy = None
    last = None
    for block, pfn in _blocks(texts):
        if legacy is None:
            # A text with free_ts is a kernel whose tool parses it (Debian's
            # 6.1 copy): it also folds a block identical to the one before,
            # keeps the ts in the text and matches "ns," -- the 6.12 copy does none.
            legacy = _FREE_TS.search(block) is not None
        if legacy and last is not None and block == last.txt:
            last.times += 1
            last.pages += _page_num(block)
            continue
        e = _Entry()
        e.pid, e.tgid = _strtol(_PID, block), _strtol(_TGID, block)
        m = _COMM.search(block)
        e.name = m.group(1).split(b"\0", 1)[0] if m else b""
        m = (_TS_61 if legacy else _TS).search(block)
        e.alloc_ts = int(m.group(1)) if m and m.group(1) else _U64
        m = _FREE_TS.search(block)
        e.free_ts = int(m.group(1)) if m and m.group(1) else _U64 if legacy else 0  # strtoull() failing: -1
        e.txt = block
        if not legacy and not keep_ts:
            m = _TS.search(block)
            if m and m.group(1):
                e.txt = block[:m.start(1)] + block[m.end(1):]
        nl = e.txt.find(b"\n")
        e.stacktrace = e.txt[nl + 1:] if nl >= 0 else b""
        e.allocator = _allocator(block, pfn)
        e.times, e.pages = 1, _page_num(block)
        last = e
        out.append(e)
    return out, bool(legacy)


def _value(e: _Entry, key: str):
    if key == "free":  # compare_release(): released (free_ts != 0) after unreleased
        return 1 if e.free_ts else 0
    return getattr(e, key)


def page_owner_sort(texts: Iterable[str], by: Optional[str] = None, *, cull: Optional[frozenset] = None,
                    sort: tuple = (), selected: frozenset = frozenset()) -> list[dict]:
    """Groups as page_owner_sort ``--cull KEYS --sort KEYS`` prints them, in its order.

    Each row: ``key`` (one cull key: bytes for stack and comm, int for pid and
    tgid; several: a tuple in compare_cull_condition()'s order), ``times``,
    ``pages`` and ``text`` (the group's output bytes).

    ``--sort`` is the order Documentation/mm/page_owner.rst gives, as the 6.1
    copy sorts; the 6.12 copy overrides it with its -t default (main()'s
    compare_flag switch runs set_single_cmp() after the options are parsed).

    :param texts: the debugfs text (``PageOwner.debugfs_bytes()`` as latin-1), chunk by chunk
    :param by: a key of :data:`CULL` (``top --by``), or None with ``cull``
    :param cull: the cull keys (:func:`parse_cull`); empty: one group per distinct text
    :param sort: (key, sign) pairs (:func:`parse_sort`); empty: times, descending
    :param selected: the select options given (``pid``, ``tgid``, ``name``): their fields are printed
    :return: the rows
    """
    if by is not None:
        if by not in CULL:
            raise UsageError(f"page_owner_sort has no cull for {by!r} (it culls by: {', '.join(CULL)})")
        cull = frozenset({CULL[by]})
    cull = cull or frozenset()
    order = sort or (("times", -1),)
    keep_ts = order[0][0] == "alloc_ts"
    keys = [k for k in _CULL_ORDER if k in cull] or ["txt"]
    groups: dict = {}
    entries, legacy = _entries(texts, keep_ts)
    for e in entries:
        g = tuple(_value(e, k) for k in keys)
        first = groups.get(g)
        if first is None:
            groups[g] = e
        else:
            first.times += e.times
            first.pages += e.pages
    rows = [groups[g] for g in sorted(groups)]  # qsort() by the cull keys, equal neighbours folded
    if legacy and any(k in ("alloc_ts", "free_ts") for k, _ in order):
        # 6.1's compare_ts()/compare_free_ts() never return 0 (a < b ? -1 : 1):
        # ties fall as glibc's merge sort leaves them, so sort as it does.
        rows = _msort(rows, lambda a, b: _compare(a, b, order))
    else:
        for key, sign in reversed(order):  # stable sorts, last key first: compare_sort_condition()
            rows.sort(key=lambda e: _value(e, key), reverse=sign < 0)
    return [{"key": _row_key(e, keys), "times": e.times, "pages": e.pages, "txt": e.txt,
             "text": _group_text(e, cull, selected)} for e in rows]


def _compare(a: _Entry, b: _Entry, order: tuple) -> int:
    """compare_sort_condition() with 6.1's comparators."""
    for key, sign in order:
        x, y = _value(a, key), _value(b, key)
        c = (-1 if x < y else 1) if key in ("alloc_ts", "free_ts") else (x > y) - (x < y)
        if c:
            return sign * c
    return 0


def _msort(rows: list, cmp) -> list:
    """glibc's msort_with_tmp(): halves (the first n // 2), merged taking the
    left one unless cmp() > 0."""
    if len(rows) <= 1:
        return rows
    n1 = len(rows) // 2
    left, right = _msort(rows[:n1], cmp), _msort(rows[n1:], cmp)
    out, i, j = [], 0, 0
    while i < len(left) and j < len(right):
        if cmp(left[i], right[j]) <= 0:
            out.append(left[i])
            i += 1
        else:
            out.append(right[j])
            j += 1
    return out + left[i:] + right[j:]


def order_records(text: bytes, sort: tuple) -> list[bytes]:
    """The records of a debugfs text (each with its PFN line and blank line)
    in the order page_owner_sort ``--sort`` (no ``--cull``) prints their
    groups: a group per distinct text, each group's records in text order.

    :param text: debugfs text, whole records
    :param sort: (key, sign) pairs (:func:`parse_sort`)
    :return: the records' bytes, reordered
    """
    raws = [r + b"\n\n" for r in text.split(b"\n\n")[:-1]]
    members: dict = defaultdict(list)
    texts = []
    for raw in raws:
        entries, _ = _entries([raw.decode("latin-1")], bool(sort) and sort[0][0] == "alloc_ts")
        members[entries[0].txt].append(raw)
        texts.append(raw.decode("latin-1"))
    out = []
    for row in page_owner_sort(texts, sort=sort):
        out.extend(members[row["txt"]])
    return out


def _row_key(e: _Entry, keys: list[str]):
    return _value(e, keys[0]) if len(keys) == 1 else tuple(_value(e, k) for k in keys)


def _group_text(e: _Entry, cull: frozenset, selected: frozenset) -> bytes:
    """main()'s output of one group."""
    head = b"%d times, %d pages" % (_c_int(e.times), _c_int(e.pages))
    if not cull:
        return head + b", " + _allocator_text(e.allocator) + b":\n" + e.txt + b"\n"
    if "pid" in cull or "pid" in selected:
        head += b", PID %d" % e.pid
    if "tgid" in cull or "tgid" in selected:
        head += b", TGID %d" % e.tgid
    if "name" in cull or "name" in selected:
        head += b", task_comm_name: " + e.name
    if "allocator" in cull:
        head += b", " + _allocator_text(e.allocator)
    if "free" in cull:
        head += b" (UNRELEASED)" if e.free_ts else b" (RELEASED)"
    if "stacktrace" in cull:
        head += b":\n" + e.stacktrace
    return head + b"\n"


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
