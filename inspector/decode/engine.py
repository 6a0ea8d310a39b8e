"""The columnar engine every client decoder reads through.

A page_ext table chunk (see :meth:`inspector.session.PageExt.chunks`) is a
run of ``entry_size``-byte records; the memmap beside it a run of ``struct
page``.  :func:`record_dtype` turns the fields a decoder needs -- their
offsets and C types read from the target's DWARF -- into a numpy structured
dtype, so ``np.frombuffer(chunk.entries, dtype)`` is the whole table as
columns without copying, and flag tests, selections and group-bys are
whole-array operations.  Python touches only the results: unique stacks,
unique flag words, per-key sums.

Shared pieces of the clients live here too: the ``struct page`` fields they
read, the known-entries mask of a chunk whose pages were partly unreadable,
compound heads (:data:`COMPOUND_WORD` and :func:`head_pfns`: a tail page's first
word is a pointer to its head plus 1, or under HVO on 7.x a mask plus 1), and
:func:`lookup_table` (the text of each distinct value
of a column, computed once per value).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import drgn
from ..lazy import np

from ..errors import TargetError


def _np_scalar(t: drgn.Type, big_endian: bool = False) -> str:
    """numpy type code of a DWARF scalar (int, enum, bool, pointer) or char array."""
    t = t.unaliased()
    end = ">" if big_endian else "<"
    if t.kind == drgn.TypeKind.ARRAY:
        return f"S{t.length * t.type.size}" if t.length is not None else "S0"
    if t.kind == drgn.TypeKind.ENUM:
        t = t.type
    if t.kind == drgn.TypeKind.BOOL:
        return "u1"
    if t.kind == drgn.TypeKind.POINTER:
        return f"{end}u{t.size}"
    if t.kind == drgn.TypeKind.STRUCT and t.size == 4 and t.has_member("counter"):  # atomic_t
        return f"{end}i4"
    if t.kind == drgn.TypeKind.STRUCT and t.size in (4, 8) and t.has_member("refs"):  # refcount_t
        return f"{end}i{t.size}"
    signed = t.kind == drgn.TypeKind.INT and t.is_signed
    return f"{end}{'i' if signed else 'u'}{t.size}"


def member_field(t: drgn.Type, name: str, base: int = 0) -> tuple[str, int, str]:
    """(name, byte offset + base, numpy code) of member ``name`` (dotted paths allowed).

    :param t: the struct (or union) type, e.g. ``prog.type("struct page_owner")``
    :param name: a member, or a dotted path into nested members (``"a.b"``)
    :param base: added to the offset (the client's offset inside the entry)
    :return: ``(name with dots as underscores, offset, numpy type code)``, a
        field for :func:`record_dtype`
    """
    path = name.split(".")
    off, cur = base, t
    for part in path:
        m = cur.unaliased().member(part)
        off += m.bit_offset // 8
        cur = m.type
    return name.replace(".", "_"), off, _np_scalar(cur)


def record_dtype(fields: Iterable[tuple[str, int, str]], itemsize: int) -> np.dtype:
    """A structured dtype of ``itemsize`` bytes with each (name, offset, code).

    Overlapping union members keep the first one named; fields that do not fit
    are dropped (a decoder asks for them by name and gets a KeyError).

    :param fields: ``(name, offset, numpy code)`` each, as :func:`member_field` gives
    :param itemsize: the record's size in bytes (the page_ext entry size)
    :return: the structured dtype

    >>> record_dtype([("flags", 0, "<u8"), ("order", 8, "<u2"), ("low", 0, "<u4")], 16)
    dtype({'names': ['flags', 'order'], 'formats': ['<u8', '<u2'], 'offsets': [0, 8], 'itemsize': 16})
    """
    names, formats, offsets, end = [], [], [], 0
    for name, off, code in sorted(fields, key=lambda f: f[1]):
        size = np.dtype(code).itemsize
        if (off < end and names) or off + size > itemsize or name in names:
            continue
        names.append(name)
        formats.append(code)
        offsets.append(off)
        end = off + size
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": max(itemsize, 1)})


def known_mask(n: int, unknown: Sequence[tuple[int, int]]) -> np.ndarray:
    """True for the entries of a chunk that were read.

    :param n: the chunk's number of entries
    :param unknown: ``[start, end)`` index ranges that could not be read
    :return: bool array of ``n``

    >>> known_mask(5, [(1, 3)]).tolist()
    [True, False, False, True, True]
    """
    mask = np.ones(n, dtype=bool)
    for a, b in unknown:
        mask[a:b] = False
    return mask


def columns(raw: bytes, dtype: np.dtype, n: int) -> np.ndarray:
    """The n records of ``raw`` as a structured array (no copy).

    :param raw: the bytes read
    :param dtype: a record dtype (:func:`record_dtype`)
    :param n: how many records ``raw`` holds
    :return: structured array of ``n`` records over ``raw``
    :raises TargetError: ``raw`` is shorter than ``n`` records
    """
    if dtype.itemsize * n > len(raw):
        raise TargetError(f"short read: {len(raw)} bytes for {n} records of {dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype, count=n)


# A tail page's first word, stored as "compound_head" whatever this kernel
# calls it: ``compound_head`` (v4.6, 1d798ca3f164 .. 7.0), renamed
# ``compound_info`` by "mm: Rename the 'compound_head' field in the 'struct
# page' to 'compound_info'" (Kiryl Shutsemau; PATCHv7 posted 27 February
# 2026, so v7.1 by date, the mainline hash unverified; in the 7.2 and 7.3
# sources).  Bit 0 set marks a tail page in both.
COMPOUND_WORD = "compound_head|compound_info"


@dataclass
class PageFields:
    """The ``struct page`` fields the clients read, as one dtype."""

    dtype: np.dtype
    size: int
    head_bit: int  # 1 << PG_head, 0 if unknown
    lru_bit: int
    vmemmap: Optional[int]  # base of the virtual memmap (SPARSEMEM_VMEMMAP), for compound heads
    compound_mask: bool = False  # a tail's compound_info holds a mask, not its head (compound_info_has_mask())


def page_fields(prog: drgn.Program, *names: str) -> PageFields:
    """The ``struct page`` members ``names``; "a|b" takes member b, stored as a,
    where this kernel has no a (e.g. "page_type|_mapcount": page_type shares
    _mapcount's word from v4.18, 6e292b9be7f4).  Members a kernel lacks are
    left out (a decoder checks ``name in dtype.names``).

    :param prog: the target
    :param names: member names of ``struct page``, ``"a|b"`` for alternatives
    :return: :class:`PageFields`: the dtype (over ``sizeof(struct page)``), the
        PG_head and PG_lru bits, the vmemmap base, whether tails hold a mask
    """
    pt = prog.type("struct page")
    fields = []
    for spec in names:
        first, *alts = spec.split("|")
        for member in (first, *alts):
            try:
                _, off, code = member_field(pt, member)
            except LookupError:
                continue
            if member == "_mapcount" and first == "page_type":
                code = code.replace("i", "u")
            fields.append((first, off, code))
            break
    from .. import kernel as k
    head = k.constant(prog, "PG_head")
    lru = k.constant(prog, "PG_lru")
    vm = None
    o = k.obj(prog, "vmemmap")
    if o is not None:
        try:
            vm = o.value_()
        except (drgn.FaultError, drgn.ObjectAbsentError):
            vm = None
    return PageFields(record_dtype(fields, pt.size), pt.size, 1 << head if head is not None else 0,
                      1 << lru if lru is not None else 0, vm, compound_info_has_mask(prog))


def compound_info_has_mask(prog: drgn.Program) -> bool:
    """The kernel's compound_info_has_mask() (include/linux/page-flags.h, from
    "mm: Rework compound_head() for power-of-2 sizeof(struct page)", the
    series that renamed the field to ``compound_info``; in the 7.2 and 7.3
    sources): CONFIG_HUGETLB_PAGE_OPTIMIZE_VMEMMAP and a power-of-two
    ``sizeof(struct page)``.  Then set_compound_head() stores
    ``GENMASK(BITS_PER_LONG - 1, order + log2(sizeof(struct page))) | 1`` in a
    tail and _compound_head() computes ``page & info``.

    Read from the debug info: the member is ``compound_info``, and
    mm/hugetlb_vmemmap.c -- built only with HUGETLB_PAGE_OPTIMIZE_VMEMMAP --
    is in the image (its ``vmemmap_optimize_enabled``, or the
    ``hugetlb_vmemmap_optimize_folio`` symbol).

    :param prog: the target
    :return: True where a tail's compound word holds a mask, not its head's address
    """
    from .. import kernel as k
    pt = prog.type("struct page")
    if not k.has_member(pt, "compound_info"):
        return False  # compound_head: always a pointer (+1)
    if not (k.exists(prog, "vmemmap_optimize_enabled")
            or k.symbol_address(prog, "hugetlb_vmemmap_optimize_folio") is not None):
        return False
    return pt.size & (pt.size - 1) == 0


def head_pfns(prog: drgn.Program, pf: PageFields, chead: np.ndarray, pfns: np.ndarray) -> np.ndarray:
    """The head pfn of each page: itself unless its compound word (the field
    :data:`COMPOUND_WORD` names) has bit 0 set.

    A tail's word is its head's address + 1, or with ``pf.compound_mask`` a
    mask + 1 that _compound_head() ANDs with the tail's own address
    (vmemmap + pfn * sizeof(struct page)).  With a virtual memmap a head's
    pfn is (address - vmemmap) / sizeof(struct page); otherwise each distinct
    head address is converted once.

    :param prog: the target (to convert head addresses without a vmemmap)
    :param pf: the struct page fields (:func:`page_fields`)
    :param chead: the compound words, one per page
    :param pfns: the pages' pfns
    :return: int64 array: each page's head pfn
    """
    out = pfns.astype(np.int64).copy()
    chead = np.asarray(chead).astype(np.uint64)
    tail = (chead & np.uint64(1)).astype(bool)
    if not tail.any():
        return out
    if pf.compound_mask:
        if pf.vmemmap is None:
            raise TargetError("compound_info holds a mask (HVO) but vmemmap is unknown: no head pages")
        base = np.uint64(pf.vmemmap)
        own = base + pfns[tail].astype(np.uint64) * np.uint64(pf.size)
        addrs = own & chead[tail]  # bit 0 of the mask is set, of the address clear
        out[tail] = ((addrs - base) // np.uint64(pf.size)).astype(np.int64)
        return out
    addrs = chead[tail] - np.uint64(1)
    if pf.vmemmap is not None:
        out[tail] = ((addrs - np.uint64(pf.vmemmap)) // np.uint64(pf.size)).astype(np.int64)
        return out
    from drgn.helpers.linux.mm import page_to_pfn
    uniq, inv = np.unique(addrs, return_inverse=True)
    conv = np.empty(len(uniq), dtype=np.int64)
    for i, a in enumerate(uniq.tolist()):
        try:
            conv[i] = page_to_pfn(drgn.Object(prog, "struct page *", a)).value_()
        except (drgn.FaultError, ValueError, LookupError):
            conv[i] = -1
    out[tail] = conv[inv]
    return out


def factorize(values) -> tuple:
    """(index per value, distinct values): ``uniq[index[i]] == values[i]``,
    ``uniq`` sorted -- np.unique's answer.

    Integers whose range is under 65536 or 4 times their number are counted
    out with a presence table, O(values + range), not sorted (an order, a
    migratetype, a node, the pids of a chunk of records: for 28,000 pids
    0.16 ms against np.unique's 3.1 ms); anything else goes through np.unique.

    :param values: a 1-d array (or sequence) of integers or anything np.unique sorts
    :return: ``(index, uniq)``

    >>> index, uniq = factorize(np.array([7, 3, 7, 9]))
    >>> index.tolist(), uniq.tolist()
    ([1, 0, 1, 2], [3, 7, 9])
    """
    v = np.asarray(values)
    if v.dtype.kind in "iu" and len(v):
        lo, hi = int(v.min()), int(v.max())
        if hi - lo < max(1 << 16, 4 * len(v)):
            wide = v if v.dtype.kind == "u" else v.astype(np.int64)  # a signed difference may not fit v's type
            off = (wide - wide.dtype.type(lo)).astype(np.intp)
            present = np.zeros(hi - lo + 1, dtype=bool)
            present[off] = True
            uniq = np.flatnonzero(present)
            remap = np.cumsum(present, dtype=np.int64) - 1
            # Back in v's own type, where the addition is modular: exact for any value v holds.
            return remap[off], uniq.astype(v.dtype) + v.dtype.type(lo)
    uniq, inv = np.unique(v, return_inverse=True)
    return inv.reshape(-1), uniq


def first_of_each(index, count: int):
    """For each of ``count`` groups, the position of its first member in ``index``.

    :param index: a group index per member (as :func:`factorize` returns)
    :param count: the number of groups
    :return: int64 array of ``count`` positions

    >>> first_of_each(np.array([1, 0, 1, 2]), 3).tolist()
    [1, 0, 3]
    """
    first = np.zeros(count, dtype=np.int64)
    first[index[::-1]] = np.arange(len(index) - 1, -1, -1)
    return first


def lookup_table(values, text: Callable[[int], str | bytes]) -> tuple:
    """(index per value, table): ``table[index[i]] == text(values[i])``,
    with ``text`` called once per distinct value.

    :param values: the values, one per row
    :param text: the (costly) function from a value to its text
    :return: ``(index, table)``

    >>> index, table = lookup_table(np.array([2, 1, 2]), lambda v: "x" * v)
    >>> index.tolist(), table
    ([1, 0, 1], ['x', 'xx'])
    """
    inv, uniq = factorize(values)
    return inv, [text(v) for v in uniq.tolist()]

