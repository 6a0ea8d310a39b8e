"""Real vmcores taken apart and damaged on purpose (issue 11's hostile inputs and fuzz corpus).

Two pieces, both plain Python on top of drgn, shared by tests/test_vm_hostile.py
and tests/test_fuzz.py:

* :class:`Elf` and :class:`Kdump` read an ELF vmcore's program headers and
  notes, or a kdump-compressed file's headers, bitmaps and page descriptors
  (plain or makedumpfile's flattened stream, which QEMU writes), and say
  where in the file a physical address lives.  Damage is a list of
  :class:`Patch` es (bytes at a file offset, or a new length) that can be
  applied to a working copy and undone, so one copy of a 512 MiB dump
  serves hundreds of mutations.

* :class:`Landmarks` is what a clean core holds where, found by drgn and a
  walk of the kernel's own page tables: the physical ranges of every page_ext
  table (which pfns' entries), of the memmap (which pfns' struct pages), of
  every stack depot record the clean records use (which handles), of the
  pageblock bitmaps, of mem_section, and of the page-table pages that
  translate all of them.  :meth:`Landmarks.touch` turns a damaged physical
  range into what it can change: those pfns, handles and pageblocks, "the
  translation" (page tables: any read may now land anywhere), or "global"
  (other kernel data: names, clocks, counters).
"""

from __future__ import annotations

import bisect
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import Iterable, Optional

PAGE = 4096
PT_LOAD, PT_NOTE, PT_NULL = 1, 4, 0
PHDR = struct.Struct("<IIQQQQQQ")  # p_type p_flags p_offset p_vaddr p_paddr p_filesz p_memsz p_align


# -- patches ---------------------------------------------------------------------------------------

@dataclass
class Patch:
    """Bytes written at a file offset (``data``), or the file cut to ``truncate`` bytes."""

    offset: int = 0
    data: bytes = b""
    truncate: Optional[int] = None


def apply(path: str, patches: list[Patch], clean: str) -> list[Patch]:
    """Apply patches to ``path`` (a copy of ``clean``); the patches that undo them."""
    undo: list[Patch] = []
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDWR)
    try:
        for p in patches:
            if p.truncate is not None:
                undo.append(Patch(truncate=size))  # restored from the clean file by revert()
                os.ftruncate(fd, p.truncate)
                size = p.truncate
                continue
            old = os.pread(fd, len(p.data), p.offset)
            end = p.offset + len(p.data)
            if end > size:
                undo.append(Patch(truncate=size))
                size = end
            undo.append(Patch(p.offset, old))
            os.pwrite(fd, p.data, p.offset)
    finally:
        os.close(fd)
    return undo[::-1]


def revert(path: str, undo: list[Patch], clean: str) -> None:
    """Undo :func:`apply` (a cut file gets its tail back from ``clean``)."""
    fd = os.open(path, os.O_RDWR)
    try:
        for p in undo:
            if p.truncate is not None:
                now = os.fstat(fd).st_size
                if p.truncate < now:
                    os.ftruncate(fd, p.truncate)
                elif p.truncate > now:
                    with open(clean, "rb") as src:
                        pos = now
                        while pos < p.truncate:
                            n = os.copy_file_range(src.fileno(), fd, p.truncate - pos, pos, pos)
                            if n <= 0:
                                raise OSError(f"cannot restore {path} from {clean}: it ends at {pos}")
                            pos += n
            else:
                os.pwrite(fd, p.data, p.offset)
    finally:
        os.close(fd)


# -- ELF vmcores -------------------------------------------------------------------------------------

@dataclass
class Seg:
    index: int
    type: int
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int


class Elf:
    """An ELF64 little-endian vmcore's program headers and notes."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                raise ValueError(f"{path}: not an ELF64 little-endian file")
            self.phoff, = struct.unpack_from("<Q", head, 32)
            self.phentsize, self.phnum = struct.unpack_from("<HH", head, 54)
            f.seek(self.phoff)
            raw = f.read(self.phentsize * self.phnum)
            self.segs = [Seg(i, *PHDR.unpack_from(raw, i * self.phentsize)[:7])
                         for i in range(self.phnum)]
            self.size = os.fstat(f.fileno()).st_size
            note = next(s for s in self.segs if s.type == PT_NOTE)
            f.seek(note.offset)
            self._notes = f.read(note.filesz)
            self._note_offset = note.offset

    def loads(self) -> list[Seg]:
        return [s for s in self.segs if s.type == PT_LOAD]

    def file_offset(self, phys: int) -> Optional[int]:
        for s in self.loads():
            if s.paddr <= phys < s.paddr + s.filesz:
                return s.offset + phys - s.paddr
        return None

    def phdr_offset(self, index: int) -> int:
        return self.phoff + index * self.phentsize

    def notes(self) -> list[tuple[bytes, int, int]]:
        """(name, file offset of the descriptor, its size) of each note."""
        out, off, raw = [], 0, self._notes
        while off + 12 <= len(raw):
            n, d, _t = struct.unpack_from("<III", raw, off)
            name = raw[off + 12:off + 12 + n].rstrip(b"\0")
            doff = off + 12 + (n + 3) // 4 * 4
            out.append((name, self._note_offset + doff, d))
            off = doff + (d + 3) // 4 * 4
        return out

    def vmcoreinfo(self) -> tuple[int, int]:
        for name, off, size in self.notes():
            if name == b"VMCOREINFO":
                return off, size
        raise LookupError("no VMCOREINFO note")

    # -- damage ---------------------------------------------------------------------
    def flip(self, phys: int, data: bytes) -> list[Patch]:
        """``data`` over the bytes at physical ``phys`` (within one segment)."""
        off = self.file_offset(phys)
        if off is None or self.file_offset(phys + len(data) - 1) != off + len(data) - 1:
            raise ValueError(f"{phys:#x}+{len(data)} is not in one segment of {self.path}")
        return [Patch(off, data)]

    def phdr_patch(self, seg: Seg) -> Patch:
        return Patch(self.phdr_offset(seg.index), PHDR.pack(seg.type, seg.flags, seg.offset, seg.vaddr,
                                                            seg.paddr, seg.filesz, seg.memsz, 0))

    def hole(self, start: int, end: int, zeros: bool = False) -> list[Patch]:
        """Physical [start, end) taken out of the dump: gone (reads fault), or
        with ``zeros`` kept as a file-less segment tail (reads give zeros:
        makedumpfile's ELF output for excluded pages).  Needs a spare
        PT_NULL program header (see :func:`with_spare_phdrs`)."""
        seg = next((s for s in self.loads() if s.paddr <= start < s.paddr + s.filesz), None)
        if seg is None:
            raise ValueError(f"{start:#x} is not in the dump")
        end = min(end, seg.paddr + seg.filesz)
        spare = next((s for s in self.segs if s.type == PT_NULL), None)
        if spare is None:
            raise ValueError("no spare program header: make the copy with with_spare_phdrs()")
        first = Seg(seg.index, PT_LOAD, seg.flags, seg.offset, seg.vaddr, seg.paddr, start - seg.paddr,
                    (end if zeros else start) - seg.paddr)
        tail = seg.paddr + seg.filesz - end
        out = [self.phdr_patch(first)]
        if tail:
            d = end - seg.paddr
            vaddr = end if seg.vaddr == seg.paddr else seg.vaddr + d if seg.vaddr else 0
            rest = Seg(spare.index, PT_LOAD, seg.flags, seg.offset + d, vaddr, end, tail, tail)
            out.append(self.phdr_patch(rest))
        return out


def with_spare_phdrs(clean: str, out: str, spare: int = 8) -> None:
    """Copy an ELF vmcore, its program headers moved to the end of the file
    with ``spare`` PT_NULL entries after them (room for :meth:`Elf.hole`)."""
    e = Elf(clean)
    with open(clean, "rb") as src, open(out, "wb") as dst:
        while True:
            chunk = src.read(16 << 20)
            if not chunk:
                break
            dst.write(chunk)
        pos = dst.tell()
        pad = -pos % 8
        dst.write(b"\0" * pad)
        new_off = pos + pad
        src.seek(e.phoff)
        dst.write(src.read(e.phentsize * e.phnum))
        dst.write(b"\0" * (e.phentsize * spare))
        dst.seek(32)
        dst.write(struct.pack("<Q", new_off))
        dst.seek(56)
        dst.write(struct.pack("<H", e.phnum + spare))


# -- kdump-compressed files ---------------------------------------------------------------------------

class Kdump:
    """A kdump-compressed vmcore (diskdump format), plain or flattened.

    ``logical`` offsets are those of the plain format; for a flattened file
    they are mapped to where makedumpfile's (offset, size) records put them."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            data = f.read()
        self.size = len(data)
        self.flattened = data[:12] == b"makedumpfile"
        self.chunks: list[tuple[int, int, int]] = []  # (logical, file offset, size)
        if self.flattened:
            pos = 4096
            while pos + 16 <= len(data):
                off, size = struct.unpack_from(">qq", data, pos)
                if off < 0 or size < 0:
                    break
                self.chunks.append((off, pos + 16, size))
                pos += 16 + size
            self.chunks.sort()
            logical = bytearray(max(o + s for o, _, s in self.chunks))
            for o, fo, s in self.chunks:
                logical[o:o + s] = data[fo:fo + s]
            data = bytes(logical)
        else:
            self.chunks = [(0, 0, len(data))]
        self.data = data
        if data[:8] != b"KDUMP   ":
            raise ValueError(f"{path}: not a kdump-compressed file")
        self.block, self.sub_blocks, self.bitmap_blocks = struct.unpack_from("<iiI", data, 428)
        self.max_mapnr, = struct.unpack_from("<I", data, 440)
        sub = self.block
        # kdump_sub_header: phys_base, dump_level, split, start_pfn, end_pfn,
        # offset_vmcoreinfo, size_vmcoreinfo, offset_note, size_note, ...
        self.offset_vmcoreinfo, self.size_vmcoreinfo = struct.unpack_from("<QQ", data, sub + 8 + 4 + 4 + 8 + 8)
        bm = self.block * (1 + self.sub_blocks)
        half = self.block * self.bitmap_blocks // 2
        self.bitmap2 = bm + half
        self.desc = self.block * (1 + self.sub_blocks + self.bitmap_blocks)
        second = data[self.bitmap2:self.bitmap2 + half]
        self.index: dict[int, int] = {}
        k = 0
        for i, byte in enumerate(second):
            if byte:
                for bit in range(8):
                    if byte >> bit & 1:
                        self.index[i * 8 + bit] = k
                        k += 1
        self.ndesc = k

    def file_offset(self, logical: int) -> Optional[int]:
        i = bisect.bisect_right(self.chunks, (logical, 1 << 62, 0)) - 1
        if i >= 0:
            o, fo, s = self.chunks[i]
            if o <= logical < o + s:
                return fo + logical - o
        return None

    def desc_of(self, pfn: int) -> Optional[tuple[int, int, int, int]]:
        """(logical offset of its descriptor, data offset, size, flags) of a dumped pfn."""
        k = self.index.get(pfn)
        if k is None:
            return None
        at = self.desc + 24 * k
        off, size, flags = struct.unpack_from("<qII", self.data, at)
        return at, off, size, flags

    def page(self, pfn: int) -> Optional[bytes]:
        d = self.desc_of(pfn)
        if d is None:
            return None
        _, off, size, flags = d
        raw = self.data[off:off + size]
        return zlib.decompress(raw) if flags & 1 else raw

    def patch_logical(self, logical: int, data: bytes) -> list[Patch]:
        """Bytes at a logical offset (split across flattened records as needed)."""
        out, pos = [], 0
        while pos < len(data):
            fo = self.file_offset(logical + pos)
            if fo is None:
                raise ValueError(f"logical offset {logical + pos:#x} is not in {self.path}")
            i = bisect.bisect_right(self.chunks, (logical + pos, 1 << 62, 0)) - 1
            o, cfo, s = self.chunks[i]
            n = min(len(data) - pos, o + s - (logical + pos))
            out.append(Patch(fo, data[pos:pos + n]))
            pos += n
        return out

    def rewrite_page(self, pfn: int, new: bytes) -> list[Patch]:
        """The page of ``pfn`` replaced by ``new`` (4096 bytes), compressed anew
        and appended; its descriptor pointed there.  Plain files only."""
        if self.flattened:
            raise ValueError("rewrite_page needs a plain kdump file (makedumpfile -R)")
        d = self.desc_of(pfn)
        if d is None:
            raise ValueError(f"pfn {pfn:#x} is not in the dump")
        at, _off, _size, flags = d
        body = zlib.compress(new) if flags & 1 else new
        return [Patch(self.size, body), Patch(at, struct.pack("<qI", self.size, len(body)))]

    def flip_data(self, pfn: int, rel: int, data: bytes) -> list[Patch]:
        """Raw bytes over the stored (compressed) data of a pfn's page."""
        d = self.desc_of(pfn)
        if d is None:
            raise ValueError(f"pfn {pfn:#x} is not in the dump")
        _, off, size, _ = d
        rel %= max(1, size - len(data))
        return self.patch_logical(off + rel, data)


# -- what a clean core holds where ----------------------------------------------------------------

def _ranges_find(ranges: list[tuple[int, int, object]], a: int, b: int) -> list[tuple[int, int, object]]:
    """Entries (start, end, what) of a start-sorted list overlapping [a, b)."""
    starts = [r[0] for r in ranges]
    i = max(0, bisect.bisect_right(starts, a) - 1)
    out = []
    while i < len(ranges) and ranges[i][0] < b:
        if ranges[i][1] > a:
            out.append(ranges[i])
        i += 1
    return out


@dataclass
class Touched:
    """What a damaged physical range can change."""

    entries: set = field(default_factory=set)  # pfns whose page_ext entry bytes changed
    memmap: set = field(default_factory=set)  # pfns whose struct page changed
    handles: set = field(default_factory=set)  # stack depot handles whose record changed
    pageblock: set = field(default_factory=set)  # pfns whose pageblock bits changed
    sections: set = field(default_factory=set)  # mem_section entries (all their pfns)
    translation: bool = False  # page tables or the dump's own map of memory: anything may move
    global_: bool = False  # other kernel data (names, clocks, variables)

    def merge(self, o: "Touched") -> None:
        self.entries |= o.entries
        self.memmap |= o.memmap
        self.handles |= o.handles
        self.pageblock |= o.pageblock
        self.sections |= o.sections
        self.translation |= o.translation
        self.global_ |= o.global_

    @property
    def local(self) -> bool:
        return not self.translation and not self.global_

    def kind(self) -> str:
        return "translation" if self.translation else "global" if self.global_ else "local"


class Landmarks:
    """Where the data each record depends on lies in a clean core's physical memory."""

    def __init__(self, core: str, vmlinux: str, handles: Iterable[int] = ()):
        import drgn
        from drgn.helpers.linux.mm import follow_phys, pfn_to_page

        from inspector import PageExt

        pe = PageExt.open(core, vmlinux=vmlinux)
        prog = self.prog = pe.prog
        lay = pe.layout
        self.entry_size = lay.entry_size
        self.section_pages = lay.section_pages
        self.page_struct = prog.type("struct page").size
        mm = prog["init_mm"].address_of_()
        self._mm = mm

        def phys(v: int) -> int:
            return follow_phys(mm, v).value_()

        # page_ext tables: direct-mapped, contiguous.
        self.tables = sorted((phys(t.address), phys(t.address) + t.bytes, t.start_pfn) for t in lay.online_tables())
        self.table_list = lay.online_tables()
        # memmap: translated in 2 MiB steps (each a PMD mapping on x86-64 vmemmap).
        mem: list = []
        for s in lay.sections:
            if not s.present:
                continue
            first = s.nr * lay.section_pages
            virt = pfn_to_page(prog, first).value_()
            length = lay.section_pages * self.page_struct
            for off in range(0, length, 2 << 20):
                n = min(2 << 20, length - off)
                a = phys(virt + off)
                if phys(virt + off + n - 1) != a + n - 1:
                    raise AssertionError("vmemmap step not physically contiguous")
                mem.append((a, a + n, first + off // self.page_struct))
        self.memmap = sorted(mem)
        # mem_section: the root pointers and each root's array of struct mem_section.
        ms = prog["mem_section"]
        ms_size = prog.type("struct mem_section").size
        spr = prog["SECTIONS_PER_ROOT"].value_()
        roots_virt = ms.value_()
        nroots = max(s.nr for s in lay.sections) // spr + 1
        self.roots = (phys(roots_virt), phys(roots_virt) + 8 * nroots)
        secs: list = []
        for r in range(nroots):
            base = ms[r].value_()
            if base:
                for s in lay.sections:
                    if s.nr // spr == r:
                        a = phys(base + (s.nr % spr) * ms_size)
                        secs.append((a, a + ms_size, s.nr))
        self.mem_section = sorted(secs)
        # pageblock bitmaps (mem_section_usage.pageblock_flags).
        from drgn.helpers.linux.mmzone import nr_to_section
        ut = prog.type("struct mem_section_usage")
        bm_off = drgn.offsetof(ut, "pageblock_flags")
        po = pe.client("page_owner")
        blocks = lay.section_pages >> po.pageblock_order
        usemap_bytes = -(-blocks * po.nr_pageblock_bits // 64) * 8
        us: list = []
        for s in lay.sections:
            if s.present:
                usage = nr_to_section(prog, s.nr).usage.value_()
                a = phys(usage + bm_off)
                us.append((a, a + usemap_bytes, s.nr))
        self.usemap = sorted(us)
        # stack depot records of the handles given (and the pool pointer array).
        dep: list = []
        for h in sorted(set(handles)):
            where = po.depot.locate(h)
            if isinstance(where, tuple):
                rec, size = where
                a = phys(rec)
                dep.append((a, a + po.depot._rec_entries_off + 8 * size, h))
        self.depot = sorted(dep)
        self.pools = []
        for i in range(po.depot._max_index() + 1):
            v = po.depot._pools[i].value_()
            if v:
                self.pools.append((phys(v), phys(v) + po.depot.pool_size, i))
        # page tables: every table page on the way to what we read.
        self.levels = 5 if "NUMBER(pgtable_l5_enabled)=1" in prog["VMCOREINFO"].string_().decode() else 4
        self.pgd = phys(prog["init_mm"].pgd.value_())
        pt: set[int] = set()
        interesting = [(t.address, t.address + t.bytes) for t in lay.online_tables()]
        interesting += [(pfn_to_page(prog, s.nr * lay.section_pages).value_(),
                         pfn_to_page(prog, s.nr * lay.section_pages).value_() + lay.section_pages * self.page_struct)
                        for s in lay.sections if s.present]
        interesting.append((prog.symbol("_stext").address, prog.symbol("_end").address))
        interesting += [(po.depot._pools[i].value_(), po.depot._pools[i].value_() + po.depot.pool_size)
                        for i in range(po.depot._max_index() + 1) if po.depot._pools[i].value_()]
        interesting.append((roots_virt, roots_virt + 8 * nroots))
        for a, b in interesting:
            for v in range(a & ~((2 << 20) - 1), b, 2 << 20):
                pt |= self._walk(v)
            pt |= self._walk(b - 1)
        self.page_tables = pt
        self.max_pfn = prog["max_pfn"].value_()

    def _walk(self, virt: int) -> set[int]:
        shifts = (48, 39, 30, 21, 12) if self.levels == 5 else (39, 30, 21, 12)
        table, out = self.pgd, set()
        for shift in shifts:
            out.add(table // PAGE)
            e, = struct.unpack("<Q", self.prog.read(table + ((virt >> shift) & 511) * 8, 8, True))
            if not e & 1 or (shift in (30, 21) and e & 0x80) or shift == 12:
                break
            table = e & 0x000FFFFFFFFFF000
        return out

    # -- a damaged range -> what it can change ------------------------------------------
    def touch(self, a: int, b: int) -> Touched:
        t = Touched()
        covered = 0
        for s, e, first in _ranges_find(self.tables, a, b):
            lo, hi = max(a, s) - s, min(b, e) - s
            t.entries.update(range(first + lo // self.entry_size, first + (hi - 1) // self.entry_size + 1))
            covered += min(b, e) - max(a, s)
        for s, e, first in _ranges_find(self.memmap, a, b):
            lo, hi = max(a, s) - s, min(b, e) - s
            t.memmap.update(range(first + lo // self.page_struct, first + (hi - 1) // self.page_struct + 1))
            covered += min(b, e) - max(a, s)
        for s, e, nr in _ranges_find(self.mem_section, a, b):
            t.sections.add(nr)
            covered += min(b, e) - max(a, s)
        if self.roots[0] < b and a < self.roots[1]:
            t.sections.update(nr for _, _, nr in self.mem_section)
            covered += min(b, self.roots[1]) - max(a, self.roots[0])
        for s, e, nr in _ranges_find(self.usemap, a, b):
            t.pageblock.update(range(nr * self.section_pages, (nr + 1) * self.section_pages))
            covered += min(b, e) - max(a, s)
        pool_bytes = 0
        for s, e, _i in _ranges_find(self.pools, a, b):
            pool_bytes += min(b, e) - max(a, s)
        for s, e, h in _ranges_find(self.depot, a, b):
            t.handles.add(h)
        covered += pool_bytes  # records nobody uses change nothing we print
        if any(p in self.page_tables for p in range(a // PAGE, (b - 1) // PAGE + 1)):
            t.translation = True
        elif covered < b - a:
            t.global_ = True
        for nr in t.sections:
            r = range(nr * self.section_pages, (nr + 1) * self.section_pages)
            t.entries.update(r)
            t.memmap.update(r)
            t.pageblock.update(r)
        return t

    def table_phys(self) -> list[tuple[int, int, int]]:
        return self.tables
