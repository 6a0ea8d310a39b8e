"""The session: one kernel's page_ext, learnt lazily, shared by every reader.

:class:`PageExt` wraps a :class:`drgn.Program` (the running kernel, a vmcore,
a live QEMU guest, a synthetic kernel) and learns what each question needs,
once: the :attr:`~PageExt.geometry` (discovery), the :attr:`~PageExt.layout`
(the walk), the :attr:`~PageExt.checks` (verification), and the client
decoders (:meth:`~PageExt.client`).  Every command, the drgn commands,
``validate`` and the decoders take a session, so a decode stands on the same
walk its checks judged, and everything a reader could not read lands in one
:attr:`~PageExt.missing`.

Reading tables goes through :meth:`~PageExt.chunks`: each online table
overlapping the pfns asked for, cut into chunks of at most
:data:`CHUNK_PAGES` entries, read with one ``prog.read`` each (bisected to
page granularity only where the target lacks pages), with the matching slice
of the memmap beside it.  Memory is bounded by one chunk in flight.

>>> from inspector import PageExt
>>> pe = PageExt(prog)                # in a drgn session
>>> pe.layout.entry_size
72
>>> owner = pe.client("page_owner")
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Iterator, Optional

import drgn

from . import kernel as k
from .clients import decoder_class, registry
from .errors import ClientError, MissingDataError, NoPageExtError, PageExtError, TargetError, VerificationError
from .model import FAIL, UNKNOWN, Check, Geometry, Layout, Missing, Table
from .reader import read_or_holes, unknown_items
from .verify import DECODE_CHECKS, memory_probe, suspect_tables, verify
from .walk import GIVE_UP_CHUNKS, entry_address, readable_end, spans, table_for, walk
from .discover import discover

# Entries per chunk: one x86-64 section (128 MiB of 4 KiB pages); a FLATMEM
# node's table is cut into pieces of this size.
CHUNK_PAGES = 1 << 15

# Lines of the kernel log shown with a crashed dump's panic message.
CRASH_LOG_LINES = 5

# Progress reporting: start(label, total) -> advance(n) callable.
ProgressFactory = Callable[[str, int], Callable[[int], None]]


def _no_progress(label: str, total: int) -> Callable[[int], None]:
    return lambda n: None


@dataclass
class Chunk:
    """Pfns [lo, hi) of one table: their entries and struct pages as read."""

    table: Table
    lo: int
    hi: int
    entries: bytes  # (hi - lo) * entry_size bytes, zeros where unknown
    unknown: list[tuple[int, int]] = field(default_factory=list)  # [a, b) entry indices unread
    memmap: Optional[bytes] = None  # (hi - lo) * sizeof(struct page) bytes, zeros where unknown
    memmap_unknown: list[tuple[int, int]] = field(default_factory=list)
    suspect: bool = False  # a decode check failed on this table (decoded only with force)

    @property
    def n(self) -> int:
        return self.hi - self.lo


class PageExt:
    """Everything pageext-inspect knows about one kernel's page_ext.

    :param prog: the kernel, with debug info loaded
    :param target: the :class:`~inspector.target.Target` it was opened from, if any
    :param force: decode even where a check the decode depends on failed
    :param progress: progress reporting for long reads (see :data:`ProgressFactory`)
    :param layout: a layout already known (a test's hand-made kernel); else walked
    """

    def __init__(self, prog: drgn.Program, *, target: Any = None, force: bool = False,
                 progress: Optional[ProgressFactory] = None, layout: Optional[Layout] = None):
        self.prog = prog
        self.target = target
        self.force = force
        self.progress = progress or _no_progress
        self.missing = Missing()
        self.presence = getattr(target, "presence", None) or prog.cache.get("pageext_presence")
        self._decoders: dict[str, Any] = {}
        self._suspects: Optional[set] = None
        self.forced: set = set()  # keys of suspect tables decoded anyway (force)
        self._decode_checks: list[Check] = []
        self._page_struct_size: Optional[int] = None
        if layout is not None:
            self.__dict__["geometry"] = layout
            self.__dict__["layout"] = layout

    @classmethod
    def open(cls, path: Optional[str] = None, *, qemu: Optional[str] = None, vmlinux: Optional[str] = None,
             arch: Optional[str] = None, timeout: Optional[float] = None, **kw: Any) -> "PageExt":
        """Open a kernel (see :func:`inspector.target.open_target`; ``timeout``:
        seconds each exchange with a QEMU guest may take) and start a session on it."""
        from .target import DEFAULT_TIMEOUT, open_target
        target = open_target(path, qemu, vmlinux, arch, DEFAULT_TIMEOUT if timeout is None else timeout)
        return cls(target.prog, target=target, **kw)

    # -- what is learnt once ---------------------------------------------------------
    @cached_property
    def geometry(self) -> Geometry:
        return discover(self.prog)

    @cached_property
    def layout(self) -> Layout:
        geo = self._current_geometry()
        label = "walking mem_section" if geo.sparse else "walking nodes"
        bar: list = []

        def step(done: int, total: int) -> None:
            if not bar:
                bar.append(self.progress(label, total))
            bar[0](1)

        for note in getattr(self.target, "notes", ()):
            self.missing.note(note)
        layout = walk(self.prog, geo, self.missing, step)
        if not layout.tables and not layout.sections and layout.unread_sections:
            incomplete = any("incomplete" in n for n in getattr(self.target, "notes", ()))
            raise TargetError("cannot read mem_section (no section of the memory model is in this dump)"
                              + ("; the dump is incomplete: makedumpfile stopped before writing it"
                                 if incomplete else ""))
        return layout

    @cached_property
    def memory(self):
        """The :class:`~inspector.verify.Memory` probe of this target."""
        return memory_probe(self.prog, self.layout, self.presence, self.missing)

    @cached_property
    def checks(self) -> list[Check]:
        """Every check of :mod:`inspector.verify`, with unreadable table pages
        recorded in :attr:`missing`."""
        checks = verify(self.layout, self.memory, max_pfn=k.value(self.prog, "max_pfn"))
        for t in self.layout.tables:
            for a, b in self.memory.unreadable(t):
                self.missing.page_ext.add(a, b)
        return checks

    @property
    def release(self) -> str:
        return self.geometry.release

    @cached_property
    def crash(self) -> Optional[dict]:
        """Why the dump's kernel went down, from its own log: ``{"message":
        the "Kernel panic - not syncing" (else Oops/BUG) line, "log": the
        last lines before it}``; None for a live kernel, or a log with no
        such line."""
        if self.target is None or self.target.kind != "vmcore":
            return None
        try:
            from drgn.helpers.linux.panic import panic_message
            from drgn.helpers.linux.printk import get_dmesg
            message = panic_message(self.prog)
            if message is None:
                return None
            lines = get_dmesg(self.prog).decode("latin-1").splitlines()
        except (LookupError, drgn.FaultError, ValueError, AttributeError, OverflowError, drgn.ObjectAbsentError):
            # OverflowError: a printk ring whose descriptor count is garbage (a zeroed prb, fuzz #36).
            return None
        text = message.decode("latin-1").strip()
        where = next((i for i in range(len(lines) - 1, -1, -1) if text in lines[i]), len(lines) - 1)
        # The out-of-memory killer names who asked, gfp and order, long before
        # the panic; keep its last such line with the log's last lines.
        trigger = [ln for ln in lines[:where] if "invoked oom-killer" in ln][-1:]
        tail = lines[max(0, where - CRASH_LOG_LINES + 1):where + 1]
        return {"message": text, "log": [ln for ln in trigger if ln not in tail] + tail}

    # -- decoders -------------------------------------------------------------------------
    def client(self, name: str):
        """The decoder of client ``name`` (e.g. "page_owner").

        :raises ClientError: not compiled in, inactive in this boot, or no decoder
        :raises VerificationError: a check the decode depends on failed (unless ``force``)
        """
        if name not in self._decoders:
            spec = registry().get(name)
            if spec is None or not spec.decoder:
                raise ClientError(f"pageext-inspect has no decoder for a client named {name!r} "
                                  f"(decoded: {', '.join(n for n, s in registry().items() if s.decoder)})")
            try:
                self._decoders[name] = decoder_class(spec)(self)
            except PageExtError:
                raise
            except LookupError as e:  # a type or symbol the decoder needs is not in the debug info
                raise ClientError(f"cannot decode {name} in this kernel: {e} ({spec.config} off, or debug "
                                  "info without its types)") from None
        return self._decoders[name]

    def require_client(self, name: str, config: str, enable: str = ""):
        """The active Client ``name``, or ClientError saying why it cannot be used."""
        client = self.layout.client(name)
        if client is None:
            raise ClientError(f"this kernel has no {name} ({config} is off)")
        if not self.layout.allocated:
            raise ClientError(f"{name} is compiled in but page_ext is empty in this boot: nothing was "
                              f"allocated ({client.how_to_enable or enable or f'boot with {name}=on'})")
        if not client.active:
            raise ClientError(f"{name} is compiled in but inactive in this boot "
                              f"({client.how_to_enable or enable or f'boot with {name}=on'})")
        return client

    def require_decodable(self) -> list[Check]:
        """Run the checks a decode stands on (bias, extent, clients).

        :raises VerificationError: one failed, and ``force`` is off
        """
        if self._suspects is None:
            checks = verify(self.layout, self.memory, only=DECODE_CHECKS, max_pfn=k.value(self.prog, "max_pfn"))
            failed = [c for c in checks if c.status == FAIL]
            if failed and not self.force:
                c = failed[0]
                raise VerificationError(f"check {c.name} failed: {c.detail}; decoding this page_ext would print "
                                        "garbage (--force decodes anyway, marking the suspect tables)", failed)
            self._suspects = suspect_tables(self.layout, checks)
            self._decode_checks = checks
            for c in checks:
                if c.name == "bias" and c.status == UNKNOWN:  # decoded, but on a base nobody could verify
                    self.missing.note(f"check bias unknown: {c.detail}")
        if self.presence is None:
            # No page list (kdump, live, kcore): the readable check would read
            # every table once more; the decode's own reads find the same holes
            # in what it reads, and record them in missing.
            return self._decode_checks
        return [c for c in self.checks if c.name in DECODE_CHECKS]

    @property
    def suspects(self) -> set:
        """Keys of the tables a failed decode check points at (decoded with ``force``)."""
        if self._suspects is None:
            self.require_decodable()
        return self._suspects or set()

    # -- pfn -> entry --------------------------------------------------------------------
    def table_for(self, pfn: int) -> Optional[Table]:
        return table_for(self.layout, pfn)

    def entry_address(self, pfn: int) -> int:
        """The address of pfn's ``struct page_ext``, or NoPageExtError saying why there is none."""
        t = self.table_for(pfn)
        if t is None:
            raise self._no_entry(pfn)
        return entry_address(t, pfn, self.layout.entry_size)

    def entry(self, pfn: int) -> bytes:
        """The bytes of pfn's entry, or NoPageExtError saying why there are none."""
        t = self.table_for(pfn)
        if t is None:
            raise self._no_entry(pfn)
        raw, lost = self.read_entries(t, pfn, pfn + 1)
        if lost:
            raise MissingDataError(f"pfn {pfn:#x}'s page_ext entry is not in the dump")
        return raw

    def _no_entry(self, pfn: int) -> NoPageExtError:
        """Why pfn has no entry to read, as the exception to raise: missing data
        (its mem_section entry could not be read) or no entry at all."""
        if self.missing.page_ext.overlaps(pfn, pfn + 1):
            return MissingDataError(f"pfn {pfn:#x}'s page_ext is unknown: what would locate it is not in the "
                                    "dump")
        return NoPageExtError(self.no_page_ext(pfn))

    def no_page_ext(self, pfn: int) -> str:
        """Why pfn has no page_ext entry, in one line."""
        lay = self.layout
        if lay.sparse:
            sec = pfn // lay.section_pages
            known = {s.nr: s for s in lay.sections}
            if sec in known:
                s = known[sec]
                t = next((t for t in lay.tables if t.section == sec), None)
                if t is not None and t.state != "online":
                    return f"pfn {pfn:#x} has no usable page_ext (section {sec}'s table is {t.state})"
                state = "online" if s.online else "offline"
                return f"pfn {pfn:#x} has no page_ext (section {sec} is present but {state}, without a table)"
            return f"pfn {pfn:#x} is outside memory (section {sec} is not present)"
        max_pfn = k.value(self.prog, "max_pfn")
        if max_pfn is not None and pfn >= max_pfn:
            return f"pfn {pfn:#x} is outside memory (max_pfn is {max_pfn:#x})"
        return f"pfn {pfn:#x} has no page_ext"

    def check_range(self, lo: int, hi: int, node: Optional[int] = None) -> None:
        """NoPageExtError unless some online table covers pfns [lo, hi) (on ``node``)."""
        if node is not None and node not in self.layout.nodes:
            raise NoPageExtError(f"there is no node {node} (nodes: {', '.join(map(str, self.layout.nodes)) or 'none'})")
        if not any(spans(self.layout, lo, hi, node)):
            where = f" on node {node}" if node is not None else ""
            if self.missing.page_ext.overlaps(lo, hi):
                raise MissingDataError(f"no page_ext that could be read in {lo:#x}-{hi - 1:#x}{where}: "
                                       f"{self.missing.lines()[0]}")
            raise NoPageExtError(self.no_page_ext(lo) + f"; no page_ext anywhere in {lo:#x}-{hi - 1:#x}{where}")

    # -- reading ---------------------------------------------------------------------------
    @property
    def page_struct_size(self) -> int:
        if self._page_struct_size is None:
            self._page_struct_size = self.prog.type("struct page").size
        return self._page_struct_size

    def read_memmap(self, lo: int, hi: int) -> tuple[Optional[bytes], list[tuple[int, int]]]:
        """The ``struct page``s of pfns [lo, hi) (within one table) and the
        [a, b) indices that could not be read (recorded in :attr:`missing`)."""
        from drgn.helpers.linux.mm import pfn_to_page
        psz = self.page_struct_size
        try:
            addr = pfn_to_page(self.prog, lo).value_()
        except (drgn.FaultError, LookupError, ValueError):
            self.missing.memmap.add(lo, hi)
            return None, [(0, hi - lo)]
        raw, holes = read_or_holes(self.prog, addr, (hi - lo) * psz)
        lost = unknown_items(holes, psz, hi - lo)
        for a, b in lost:
            self.missing.memmap.add(lo + a, lo + b)
        if lost == [(0, hi - lo)]:
            return None, lost
        return raw, lost

    def read_entries(self, table: Table, lo: int, hi: int) -> tuple[bytes, list[tuple[int, int]]]:
        """The entries of pfns [lo, hi) of ``table`` and the [a, b) indices that
        could not be read (recorded in :attr:`missing`)."""
        esz = self.layout.entry_size
        raw, holes = read_or_holes(self.prog, entry_address(table, lo, esz), (hi - lo) * esz)
        lost = unknown_items(holes, esz, hi - lo)
        for a, b in lost:
            self.missing.page_ext.add(lo + a, lo + b)
        return raw, lost

    def chunks(self, lo: int = 0, hi: int = 1 << 64, *, node: Optional[int] = None, memmap: bool = True,
               label: str = "reading page_ext") -> Iterator[Chunk]:
        """Each online table's entries (and struct pages) for pfns [lo, hi), in
        pfn order, at most :data:`CHUNK_PAGES` at a time.

        Tables a failed decode check points at are skipped, or (with
        ``force``) yielded with ``suspect`` set."""
        self.require_decodable()
        max_pfn = k.value(self.prog, "max_pfn")
        work = []
        for t, a, b in spans(self.layout, lo, hi, node):
            end = readable_end(self.layout, t, max_pfn)
            if end < b:  # a FLATMEM span beyond max_pfn: corrupt (extent fails it), not read
                self.missing.note(f"node {t.node}'s table claims pfns up to {t.end_pfn - 1:#x}, beyond max_pfn: "
                                  f"entries past {end - 1:#x} not read")
            if a < min(b, end):
                work.append((t, a, min(b, end)))
        total = sum(-(-(b - a) // CHUNK_PAGES) for _, a, b in work)
        advance = self.progress(label, total) if total > 4 else (lambda n: None)
        suspects = self.suspects
        esz = self.layout.entry_size
        for t, a, b in work:
            suspect = t.key in suspects
            if suspect and not self.force:
                continue
            if suspect:
                self.forced.add(t.key)
            failed = 0
            for c in range(a, b, CHUNK_PAGES):
                d = min(b, c + CHUNK_PAGES)
                if failed >= GIVE_UP_CHUNKS:  # a table that reads nowhere: the rest is unknown, unread
                    self.missing.page_ext.add(c, b)
                    break
                if esz == 0:
                    raw, lost = b"", []
                else:
                    raw, lost = self.read_entries(t, c, d)
                    failed = failed + 1 if lost == [(0, d - c)] else 0
                mm, mm_lost = self.read_memmap(c, d) if memmap else (None, [])
                yield Chunk(t, c, d, raw, lost, mm, mm_lost, suspect)
                advance(1)

    # -- a live target changes while it is read -------------------------------------------------
    @property
    def live(self) -> bool:
        """A running kernel (/proc/kcore) or a running QEMU guest: it may change while read.
        In a drgn session (no Target), what the program says (drgn on /proc/kcore, drgn --qemu)."""
        if self.target is not None:
            return getattr(self.target, "kind", None) in ("kcore", "qemu")
        return bool(self.prog.flags & drgn.ProgramFlags.IS_LIVE)

    def _current_geometry(self) -> Geometry:
        """The geometry with total_usage read now (memory hotplug grows it)."""
        geo = self.geometry
        if self.live and geo.total_usage is not None:
            usage = k.value(self.prog, "total_usage", "page_ext.c")
            if usage is not None and usage != geo.total_usage:
                import dataclasses
                geo = dataclasses.replace(geo, total_usage=usage)
        return geo

    def fingerprint(self, layout: Optional[Layout] = None) -> str:
        """A digest of what a layout depends on (every mem_section's flags and
        page_ext pointer, or every node's table and span, and total_usage):
        of ``layout``, or of the kernel walked afresh.  The session's layout
        and a fresh walk with equal fingerprints: no table came or went."""
        if layout is None:
            layout = walk(self.prog, self._current_geometry(), Missing())
        h = hashlib.sha256()
        h.update(repr(layout.total_usage).encode())
        for s in layout.sections:
            h.update(f"{s.nr}:{s.present}:{s.online}:{s.stored};".encode())
        for t in layout.tables:
            h.update(f"{t.key}:{t.start_pfn}:{t.nr_pages}:{t.address}:{t.state};".encode())
        return h.hexdigest()

    def unchanged(self) -> bool:
        """Whether the kernel's layout, read now, is still the one this session
        walked (and read its tables by).  Always true of a core."""
        if not self.live:
            return True
        return self.fingerprint(self.layout) == self.fingerprint()

    def reset(self) -> None:
        """Forget everything learnt from the target's memory (a live target moved on)."""
        for name in ("layout", "memory", "checks"):
            self.__dict__.pop(name, None)
        self.missing = Missing()
        self._decoders.clear()
        self._suspects = None
        self.forced = set()
        self._decode_checks = []
