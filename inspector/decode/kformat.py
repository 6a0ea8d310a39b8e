"""The target kernel's own names and printf, so our text is the kernel's text.

Everything a page_owner record prints by name is read from the target, once:
the gfp and page flag tables that ``%pGg``/``%pGp`` walk (``gfpflag_names``,
``pageflag_names`` and ``pff`` in lib/vsprintf.c + mm/debug.c),
``migratetype_names``, ``migrate_reason_names``, and the symbols ``%pS``
prints, from the kernel's own kallsyms (so ``name+off/size`` uses kallsyms'
size: the distance to the next symbol, not the ELF size).  Where the text
itself changed between versions with no change in any type (e.g. the first
line of a debugfs record), :func:`kernel_format` takes the format string out
of the kernel image's .rodata and :func:`kprintf` applies it, so a newer
kernel's wording is followed without a table of versions here.  Only the
``%`` conversions the kernel uses in these strings are implemented.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional, Sequence

import drgn

from .flags import flag_table, format_flags, gfp_flag_names  # noqa: F401  (format_flags: tests)
from ..kernel import constant as _enum_value
from ..text import escape
from ..vprintf import Dec, Hex, Str


class KernelNames:
    """Flag, migratetype and reason names, as the target kernel prints them."""

    def __init__(self, prog: drgn.Program, missing: Optional[Any] = None):
        """``missing`` (an :class:`inspector.model.Missing`) learns of a table
        that cannot be read: the names it holds are then left out."""
        self.prog = prog
        self.missing = missing
        self.gfp_names = self._read("gfpflag_names", lambda: gfp_flag_names(prog), [])
        self.page_names = self._read("pageflag_names", lambda: flag_table(prog, "pageflag_names"), [])
        nr = _enum_value(prog, "__NR_PAGEFLAGS")
        self.pageflags_mask = (1 << nr) - 1 if nr is not None else (1 << 64) - 1
        self.pff = self._read("pff", self._page_flags_fields, None)
        self.migratetype_names = self._strings("migratetype_names")
        self.migrate_reason_names = self._strings("migrate_reason_names")
        self._gfp_cache: dict[int, str] = {}
        self._pflags_cache: dict[int, str] = {}

    def _read(self, what: str, fn: Callable[[], Any], default: Any) -> Any:
        """fn(), or ``default`` when the kernel's table cannot be read (noted)."""
        try:
            return fn()
        except (drgn.FaultError, drgn.ObjectAbsentError, ValueError, OverflowError) as e:
            if self.missing is not None:
                self.missing.note(f"the kernel's {what} cannot be read ({str(e).splitlines()[0][:120]}): "
                                  "the names it holds are not printed")
            return default

    def _strings(self, name: str) -> list[str]:
        try:
            arr = self.prog[name]
        except KeyError:
            return []
        out = []
        for i in range(min(arr.type_.length or 0, 256)):
            text = self._read(f"{name}[{i}]", lambda: arr[i].string_().decode("latin-1")
                              if arr[i].value_() else "(null)", None)
            out.append(f"<{name}[{i}] unreadable>" if text is None else text)
        return out

    def _page_flags_fields(self) -> Optional[list[tuple[int, int, int, bool, str]]]:
        # lib/vsprintf.c pff[]: the section/node/zone/lastcpupid/kasantag
        # fields %pGp prints after the flag names, each with its width, shift,
        # mask and decimal-or-hex spec, read from the target.  A kernel whose
        # %pGp prints names only has no pff[]: then None (version not
        # verified here; 6.1 and 6.12 both have pff[]).
        try:
            pff = self.prog["pff"]
            dec = self.prog["default_dec_spec"].address_
        except KeyError:
            return None
        out = []
        for i in range(pff.type_.length or 0):
            f = pff[i]
            out.append((f.width.value_(), f.shift.value_(), f.mask.value_() & 0xFFFFFFFF,
                        f.spec.value_() == dec, f.name.string_().decode("latin-1")))
        return out

    def gfp(self, mask: int) -> str:
        """``%pGg``."""
        text = self._gfp_cache.get(mask)
        if text is None:
            text = self._gfp_cache[mask] = format_flags(mask, self.gfp_names)
        return text

    def page_flags(self, flags: int) -> str:
        """``%pGp`` (v5.14+ with fields): ``0x...(names|node=N|zone=N)``."""
        text = self._pflags_cache.get(flags)
        if text is not None:
            return text
        main = flags & self.pageflags_mask
        parts = []
        if main:
            parts.append(format_flags(main, self.page_names))
        if self.pff is None:
            text = format_flags(main, self.page_names)
        else:
            for width, shift, mask, dec, name in self.pff:
                if not width:
                    continue
                v = (flags >> shift) & mask
                parts.append(f"{name}={v if dec else hex(v)}")
            text = f"{hex(flags)}({'|'.join(parts)})"
        if len(self._pflags_cache) < 65536:
            self._pflags_cache[flags] = text
        return text

    def migratetype(self, mt: int) -> str:
        """The name of a migratetype, as the target's kernel spells it.

        :param mt: a migratetype's value
        :return: the target's ``migratetype_names[mt]``, or ``<migratetype N>`` beyond the table
        """
        return self.migratetype_names[mt] if 0 <= mt < len(self.migratetype_names) else f"<migratetype {mt}>"

    def migrate_reason(self, r: int) -> str:
        """The name of a migrate reason, as the target's kernel spells it.

        :param r: a ``last_migrate_reason`` value
        :return: the target's ``migrate_reason_names[r]``, or ``<reason N>`` beyond the table
        """
        return self.migrate_reason_names[r] if 0 <= r < len(self.migrate_reason_names) else f"<reason {r}>"

    def gfp_bit(self, name: str) -> Optional[int]:
        """The mask of a single gfp flag, e.g. "__GFP_MOVABLE", from the target."""
        for mask, n in self.gfp_names:
            if n == name:
                return mask
        v = _enum_value(self.prog, "_" + name)  # ___GFP_MOVABLE (pre-v6.10 #define: absent)
        if v is not None:
            return v
        bit = _enum_value(self.prog, "_" + name + "_BIT")  # v6.10+ enum ___GFP_*_BIT
        return 1 << bit if bit is not None else None


def kallsyms_in_order(prog: drgn.Program) -> list:
    """The kernel's own kallsyms symbols, in kallsyms' order (by address, ties
    in table order), through drgn's public :func:`load_vmlinux_kallsyms`
    (/proc/kallsyms live as root; else the table VMCOREINFO points at, 6.0+).
    [] where neither is available; the caller then uses the ELF symbols.

    :param prog: the target
    :return: list of :class:`drgn.Symbol`, or [] without kallsyms
    """
    from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms
    try:
        index = load_vmlinux_kallsyms(prog)
        return list(index(prog, None, None, False))
    except Exception:  # no kallsyms symbols in VMCOREINFO (pre-6.0), no permission, a custom Program
        return []


# scripts/kallsyms.c (as in 5.10): the ELF symbols it leaves out of the
# table, by name or prefix, and its order among symbols at one address.
_KALLSYMS_IGNORED = {"kallsyms_addresses", "kallsyms_offsets", "kallsyms_relative_base", "kallsyms_num_syms",
                     "kallsyms_names", "kallsyms_markers", "kallsyms_token_table", "kallsyms_token_index",
                     "_SDA_BASE_", "_SDA2_BASE_"}
_KALLSYMS_IGNORED_PREFIXES = ("$", ".L", "__crc_", "__efistub_", "__kstrtab_", "__kstrtabns_",
                              "__AArch64ADRPThunk_", "__ARMV5PILongThunk_", "__ARMV7PILongThunk_",
                              "__ThumbV7PILongThunk_", "__LA25Thunk_", "__microLA25Thunk_")


def _linker_provided(name: str) -> bool:
    """scripts/kallsyms.c may_be_linker_script_provide_symbol()."""
    if len(name) < 8 or not name.startswith("__"):
        return False
    return (name.startswith(("__start_", "__stop_", "__end_")) or name.endswith(("_start", "_end")))


def kallsyms_from_elf(prog: drgn.Program) -> list:
    """The vmlinux's ELF symbols as scripts/kallsyms.c would have laid out the
    kernel's table, for a target whose own table drgn cannot read (before
    v6.0, whose VMCOREINFO does not point at kallsyms): its ignored names
    left out, sorted by address, and among symbols at one address non-weak
    first, then not linker-provided, then fewer leading underscores, then
    symbol-table order (compare_symbols()).  The kernel prints a symbol's size
    as the distance to the next address, so what matters for ``+off/size`` is
    the set of addresses, which this keeps.

    :param prog: the target
    :return: list of :class:`drgn.Symbol`
    """
    try:
        syms = prog.symbols()
    except Exception:
        return []
    keep = [(s.address, s.binding == drgn.SymbolBinding.WEAK, _linker_provided(s.name),
             len(s.name) - len(s.name.lstrip("_")), i, s)
            for i, s in enumerate(syms)
            if s.name and s.name not in _KALLSYMS_IGNORED and not s.name.startswith(_KALLSYMS_IGNORED_PREFIXES)]
    keep.sort(key=lambda k: k[:5])
    return [k[5] for k in keep]


class Symbolizer:
    """``%pS`` of a text address, with the target's kallsyms semantics.

    kernel/kallsyms.c get_symbol_pos(): among symbols at one address the
    first in kallsyms' order wins (e.g. ``rest_init``, not the linker's
    ``__noinstr_text_end`` at the same address), and a symbol's size is the
    distance to the next symbol with a higher address.  We read the target's
    own kallsyms table once (drgn decodes it) and apply those two rules.
    """

    def __init__(self, prog: drgn.Program):
        self.prog = prog
        self._cache: dict[int, str] = {}
        self._addrs: list[int] = []
        self._names: list[str] = []
        self._ends: list[int] = []
        self._loaded = False

    def _load(self) -> None:
        """Read the kallsyms table on first use (about 0.25 s on x86-64)."""
        self._loaded = True
        last = None
        # kallsyms order: sorted by address.  Before v6.0 the target's own
        # table is out of drgn's reach; the ELF symbols, laid out as
        # scripts/kallsyms.c does, give the same addresses (5.10's
        # ret_from_fork is "+0x1f/0x30" in its page_owner text: the ELF size
        # is 0x2a, the next symbol 0x30 on).
        for sym in kallsyms_in_order(self.prog) or kallsyms_from_elf(self.prog):
            if self._addrs and sym.address == self._addrs[-1]:
                continue  # an alias: the first one is printed
            if self._addrs:
                self._ends.append(sym.address)
            self._addrs.append(sym.address)
            self._names.append(sym.name)
            last = sym
        if last is not None:
            self._ends.append(last.address + last.size)

    def _lookup(self, pc: int) -> Optional[tuple[str, int, int, Optional[str]]]:
        import bisect

        if not self._loaded:
            self._load()
        i = bisect.bisect_right(self._addrs, pc) - 1
        if 0 <= i and pc < self._ends[i]:
            return self._names[i], self._addrs[i], self._ends[i] - self._addrs[i], None
        try:
            sym = self.prog.symbol(pc)  # a module's text: drgn's module symbols
        except LookupError:
            return None
        return sym.name, sym.address, sym.size, self._module(pc)

    def __call__(self, pc: int) -> str:
        text = self._cache.get(pc)
        if text is not None:
            return text
        found = self._lookup(pc)
        if found is None:
            text = hex(pc)  # kernel/kallsyms.c __sprint_symbol(): "0x%lx"
        else:
            name, addr, size, mod = found
            text = f"{name}+{pc - addr:#x}/{size:#x}"
            if mod:
                text += f" [{mod}]"
        self._cache[pc] = text
        return text

    def _module(self, pc: int) -> Optional[str]:
        try:
            from drgn.helpers.linux.module import address_to_module
            mod = address_to_module(self.prog, pc)
            return mod.name.string_().decode() if mod else None
        except Exception:
            return None


# -- the kernel's own format strings ------------------------------------------------

_CONV = re.compile(rb"%([-#0 +]*)(\d+|\*)?(?:\.(\d+))?(hh|h|ll|l|z|t)?([a-zA-Z%])")


def _rodata(prog: drgn.Program) -> bytes:
    try:
        start = prog.symbol("__start_rodata").address
        end = prog.symbol("__end_rodata").address
        return prog.read(start, end - start)
    except (LookupError, drgn.FaultError, ValueError):
        return b""


class KernelStrings:
    """C string literals found in the target kernel's .rodata, read once."""

    def __init__(self, prog: drgn.Program):
        self._data: Optional[bytes] = None
        self.prog = prog

    def find(self, head: bytes, contains: bytes = b"") -> Optional[bytes]:
        """The first literal starting with ``head`` (and containing ``contains``)."""
        if self._data is None:
            self._data = _rodata(self.prog)
        data = self._data
        pos = 0
        while True:
            i = data.find(head, pos)
            if i < 0:
                return None
            pos = i + 1
            if i and data[i - 1] != 0:
                continue  # the tail of a longer string
            end = data.find(b"\0", i)
            s = data[i:end]
            if contains in s:
                return s


def _p_extension_end(fmt: bytes, pos: int) -> int:
    """End of the letters of a ``%p`` extension starting at ``pos`` (``Gg``,
    ``Gp``: two letters; ``S``/``s``: one; others: all alphanumerics)."""
    j, n = pos, len(fmt)
    while j < n and fmt[j:j + 1].isalnum():
        j += 1
        if fmt[pos:pos + 1] == b"G" and j - pos == 2:
            break
        if fmt[pos:pos + 1] in (b"S", b"s") and j - pos == 1:
            break
    return j


def compile_format(fmt: bytes, ext: Callable[[bytes, Any], str], raw: bool = False) -> Callable[[Sequence[Any]], str]:
    """Compile a kernel format string once into ``f(args) -> str``.

    Integers are printed as C would print them at their declared width (the
    caller passes them already signed/unsigned as the C type is); ``%p``
    extensions are handed to ``ext(ext_letters, arg)``.  Strings pass through
    :func:`escape` unless ``raw`` (then each character is one byte, latin-1).

    :param fmt: the format string, bytes as in the kernel image
    :param ext: ``ext(letters, arg) -> str`` for ``%p<letters>``
    :param raw: print strings as they are (no escaping)
    :return: ``f(args) -> str``; ``f.nconv`` is its number of conversions

    >>> compile_format(b"%d pages, order %u\\n", None)((3, 2))
    '3 pages, order 2\\n'
    """
    parts: list[str] = []
    # One converter per conversion; None where Python's own "%s" of the value
    # already prints what C prints (decimal integers, raw strings), so most
    # records are formatted by one C-level ``%`` with no Python call per field.
    convs: list[Optional[Callable[[Any], str]]] = []
    pos, n = 0, len(fmt)
    while pos < n:
        m = _CONV.search(fmt, pos)
        if not m:
            parts.append(fmt[pos:].decode("latin-1").replace("%", "%%"))
            break
        parts.append(fmt[pos:m.start()].decode("latin-1").replace("%", "%%"))
        flags, width, _prec, _length, conv = m.groups()
        pos = m.end()
        if conv == b"%":
            parts.append("%%")
            continue
        if conv == b"p":
            j = _p_extension_end(fmt, pos)
            letters = fmt[pos:j]
            convs.append(lambda v, letters=letters: ext(letters, v))
            pos = j
        elif conv in (b"d", b"i", b"u"):
            convs.append(None)
        elif conv == b"x":
            # The kernel's number() prints "0x0" for %#x of 0 (glibc: "0").
            convs.append(hex if b"#" in flags else (lambda v: format(v, "x")))
        elif conv == b"X":
            convs.append((lambda v: "0X" + format(v, "X")) if b"#" in flags else (lambda v: format(v, "X")))
        elif conv == b"s":
            convs.append(None if raw else escape)
        else:
            convs.append(str)
        w = int(width) if width and width != b"*" else 0
        parts.append(f"%{'-' if b'-' in flags else ''}{w or ''}s")
    template = "".join(parts)
    nconv = len(convs)
    special = [(i, c) for i, c in enumerate(convs) if c is not None]

    def apply(args: Sequence[Any]) -> str:
        a = list(args[:nconv])
        for i, c in special:
            a[i] = c(a[i])
        return template % tuple(a)

    apply.nconv = nconv  # type: ignore[attr-defined]
    return apply


def kprintf(fmt: bytes, args: Sequence[Any], ext: Callable[[bytes, Any], str], raw: bool = False) -> str:
    """Apply a kernel format string to Python values (see :func:`compile_format`).

    :param fmt: the format string
    :param args: one Python value per conversion
    :param ext: ``ext(letters, arg) -> str`` for ``%p<letters>``
    :param raw: print strings as they are (no escaping)
    :return: the text

    >>> kprintf(b"PFN 0x%lx type %s", (0x1234, "Movable"), None, raw=True)
    'PFN 0x1234 type Movable'
    """
    return compile_format(fmt, ext, raw)(args)


def count_conversions(fmt: bytes) -> int:
    """The number of conversions of a kernel format string.

    :param fmt: a kernel format string
    :return: how many arguments it takes (``%%`` takes none)

    >>> count_conversions(b"%d%% of %lu pages %pS")
    3
    """
    return sum(1 for m in _CONV.finditer(fmt) if m.group(5) != b"%")



def format_pieces(fmt: bytes, args: Sequence[Any]) -> Optional[list]:
    """A kernel format string as :mod:`inspector.vprintf` pieces over columns.

    Each argument is a numpy array for an integer conversion, or an
    ``(index, table)`` pair for ``%s`` and ``%p<ext>`` (the text of each
    record is ``table[index[i]]``, bytes).  None when the format uses a
    width, precision or conversion the vectorised printf does not do (the
    caller then formats record by record with :func:`compile_format`).

    :param fmt: the format string
    :param args: per conversion, a numpy column or an ``(index, table)`` pair
    :return: list of :mod:`inspector.vprintf` pieces, or None
    """

    pieces: list = []
    pos, n, i = 0, len(fmt), 0
    while pos < n:
        m = _CONV.search(fmt, pos)
        if not m:
            pieces.append(fmt[pos:])
            break
        if m.start() > pos:
            pieces.append(fmt[pos:m.start()])
        flags, width, prec, _length, conv = m.groups()
        pos = m.end()
        if conv == b"%":
            pieces.append(b"%")
            continue
        if width or prec or flags.replace(b"#", b""):
            return None
        if i >= len(args):
            return None
        arg = args[i]
        i += 1
        if conv == b"p":
            pos = _p_extension_end(fmt, pos)
            pieces.append(Str(*arg))
        elif conv == b"s":
            pieces.append(Str(*arg))
        elif conv in (b"d", b"i", b"u"):
            pieces.append(Dec(arg))
        elif conv == b"x":
            pieces.append(Hex(arg, b"#" in flags))
        else:
            return None
    return pieces
