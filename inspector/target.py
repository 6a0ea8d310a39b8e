"""Opening a kernel: the running one, a vmcore, or a live QEMU guest.

This is the first stage of the data flow (target -> discover -> walk ->
verify -> clients -> report).  It turns what the user named into a
:class:`drgn.Program` with debug info loaded, or raises
:class:`~inspector.errors.TargetError` with one line a user can act on.
Nothing here writes to the target: drgn only ever reads /proc/kcore, a core
file, or guest memory over QMP.

Every input is bounded before drgn sees it: a core must be a regular file
(or /proc/kcore) and is opened without blocking; its ELF or kdump header is
checked against its own size; a QMP socket must greet us, and answer
every exchange after that, within the timeout (``--timeout``,
:data:`~inspector.link.DEFAULT_TIMEOUT` by default; :mod:`inspector.link`
bounds drgn's own exchanges).  /proc/kcore and core files are not bounded
that way: a read of either is the kernel copying memory or a file's pages,
which waits on nothing that can stop answering.  Following drgn's conventions, debug info comes
from ``-s/--vmlinux`` when given, otherwise from drgn's default search; drgn
matches a vmlinux to the kernel by build ID and silently ignores one that
does not match, so a mismatch shows up as "no debug info", and we say which.
"""

from __future__ import annotations

import errno
import json
import logging
import mmap
import os
import re
import socket
import stat
import struct
from dataclasses import dataclass
from typing import Any, Optional

import drgn

from .errors import TargetError
from .kernel import release as kernel_release, value as kernel_value, vmcoreinfo_release
from .link import DEFAULT_TIMEOUT, Link, NoAnswerError, open_link
from .versions import note_target

QMP_TIMEOUT = DEFAULT_TIMEOUT  # seconds for a QMP socket to accept and greet (the default --timeout)


@dataclass
class Target:
    kind: str  # kcore | vmcore | qemu
    path: str
    prog: drgn.Program
    presence: Any = None  # inspector.reader.Presence of an ELF core, else None
    # What the core's own header says is wrong with it (makedumpfile's
    # incomplete flag), for the answer's "missing" list.
    notes: tuple[str, ...] = ()
    link: Optional[Link] = None  # a QEMU guest's bounded QMP connection (inspector.link)

    def to_json(self) -> dict:
        return {"kind": self.kind, "path": self.path}

    def failure(self) -> Optional[str]:
        """Why the target stopped answering (one line), if it did."""
        return self.link.failure() if self.link is not None and not self.link.taken else None

    def take_failure(self) -> Optional[str]:
        """:meth:`failure`, for a command that keeps what it read before and
        marks its answer partial with this line (then it is no error)."""
        why = self.failure()
        if why:
            self.link.taken = True
        return why

    def close(self) -> None:
        """Let go of a QEMU guest's connection (a core needs nothing)."""
        if self.link is not None:
            self.link.close()


# Whole-file compression (kdump-tools' KDUMP_COMPRESSION): magic -> (name, command).
COMPRESSED = {b"\x1f\x8b": ("gzip", "gunzip -k"), b"\xfd7zXZ\x00": ("xz", "unxz -k"),
              b"\x28\xb5\x2f\xfd": ("zstd", "unzstd"), b"BZh": ("bzip2", "bunzip2 -k")}


def _regular_file(path: str, what: str, missing: Optional[str] = None) -> os.stat_result:
    """stat() a path the user named, refusing what cannot be a file of data."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if missing:
            raise TargetError(missing) from None
        if path == "/proc/kcore":
            raise TargetError("/proc/kcore: no such file (kernel without CONFIG_PROC_KCORE, or a container "
                              "that hides it); use a vmcore or --qemu") from None
        raise TargetError(f"{path}: no such file") from None
    except PermissionError:
        raise TargetError(f"{path}: permission denied") from None
    except OSError as e:
        raise TargetError(f"{path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise TargetError(f"{path}: is a directory, not {what}")
    if not stat.S_ISREG(st.st_mode) and path != "/proc/kcore":
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else \
            "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file"
        if stat.S_ISSOCK(st.st_mode):  # most likely QEMU's QMP socket (issue 20)
            raise TargetError(f"{path}: a socket, not {what}; for a live QEMU guest's QMP socket "
                              f"use --qemu {path}")
        raise TargetError(f"{path}: {kind}, not {what} (give a regular file)")
    return st


def _open_nonblocking(path: str):
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    return os.fdopen(fd, "rb")


def _check_core_file(path: str) -> bytes:
    """Fail early and clearly on a missing, unreadable or truncated core."""
    st = _regular_file(path, "a vmcore")
    try:
        with _open_nonblocking(path) as f:
            head = f.read(64)
            size = st.st_size
            if head[:4] == b"\x7fELF" and path != "/proc/kcore":
                _check_elf(f, head, size, path)
    except PermissionError:
        raise TargetError(f"{path}: permission denied (reading a live kernel needs root)") from None
    except OSError as e:
        raise TargetError(f"{path}: {e.strerror or e}") from None
    if path != "/proc/kcore" and len(head) < 64:
        raise TargetError(f"{path}: too short to be a vmcore ({len(head)} bytes)")
    return head


def _check_elf(f, head: bytes, size: int, path: str) -> None:
    """An ELF core's headers must fit in the file, and its segments too."""
    need = 64 if head[4:5] == b"\x02" else 52
    if len(head) < need:
        raise TargetError(f"{path}: truncated ELF header ({len(head)} bytes, an ELF header is {need})")
    cls, data = head[4], head[5]
    if cls not in (1, 2) or data not in (1, 2):
        raise TargetError(f"{path}: not a valid ELF file (class {cls}, data encoding {data})")
    end = "<" if data == 1 else ">"
    if cls == 2:
        phoff, = struct.unpack_from(end + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 54)
        want, fmt = 56, end + "IIQQQQQQ"
    else:
        phoff, = struct.unpack_from(end + "I", head, 28)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 42)
        want, fmt = 32, end + "IIIIIIII"
    if phnum == 0:
        raise TargetError(f"{path}: an ELF file without program headers is not a vmcore")
    if phentsize != want:
        raise TargetError(f"{path}: corrupt ELF header: program header size {phentsize}, expected {want}")
    if phoff + phnum * phentsize > size:
        raise TargetError(f"{path}: truncated vmcore (program headers cut off: {phnum} at offset {phoff}, "
                          f"file has {size} bytes)")
    f.seek(phoff)
    phdrs = f.read(phentsize * phnum)
    if len(phdrs) < phentsize * phnum:
        raise TargetError(f"{path}: truncated vmcore (program headers cut off)")
    last = 0
    for i in range(phnum):
        fields = struct.unpack_from(fmt, phdrs, i * phentsize)
        if cls == 2:
            p_type, p_offset, p_filesz = fields[0], fields[2], fields[5]
        else:
            p_type, p_offset, p_filesz = fields[0], fields[1], fields[4]
        if p_type in (1, 4):  # PT_LOAD, PT_NOTE
            last = max(last, p_offset + p_filesz)
    if last > size:
        raise TargetError(f"{path}: truncated vmcore: segments need {last} bytes, file has {size}")


def platform_for(arch: Optional[str]) -> Optional[drgn.Platform]:
    if not arch:
        return None
    names = {a.name.lower(): a for a in drgn.Architecture if a.name != "UNKNOWN"}
    a = names.get(arch.lower().replace("-", "_"))
    if a is None and arch.lower() in ("i686", "i586", "x86"):
        a = drgn.Architecture.I386
    if a is None:
        raise TargetError(f"unknown architecture {arch!r} (one of: {', '.join(sorted(names))})")
    return drgn.Platform(a)


def _check_vmlinux(vmlinux: str) -> None:
    _regular_file(vmlinux, "a vmlinux", missing=f"{vmlinux}: no such vmlinux")
    try:
        with _open_nonblocking(vmlinux) as f:
            if f.read(4) != b"\x7fELF":
                raise TargetError(f"{vmlinux}: not an ELF file")
    except PermissionError:
        raise TargetError(f"{vmlinux}: permission denied") from None
    except OSError as e:
        raise TargetError(f"{vmlinux}: {e.strerror or e}") from None


def qmp_greeting(path: str, timeout: float = QMP_TIMEOUT) -> None:
    """Connect to a QMP socket and read its greeting, or TargetError within ``timeout``.

    drgn's own connection blocks forever on a socket that accepts but never
    speaks; this probe makes that a clear error.  The probe disconnects
    before drgn connects (a QMP socket serves one client at a time)."""
    if ":" in path and not os.path.exists(path):
        host, _, port = path.rpartition(":")
        family, addr = socket.AF_INET, (host or "127.0.0.1", int(port) if port.isdigit() else -1)
        if addr[1] < 0:
            raise TargetError(f"{path}: not a QMP socket path nor HOST:PORT")
    else:
        if not os.path.exists(path):
            raise TargetError(f"{path}: no such QMP socket")
        st = os.stat(path)
        if not stat.S_ISSOCK(st.st_mode):
            raise TargetError(f"{path}: not a socket (give QEMU's -qmp unix:PATH,server=on socket)")
        family, addr = socket.AF_UNIX, path
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(addr)
        data = b""
        while b"\n" not in data:
            got = s.recv(4096)
            if not got:
                raise TargetError(f"{path}: QEMU closed the QMP connection before greeting us "
                                  "(another client may be connected: a QMP socket serves one at a time)")
            data += got
            if len(data) > 65536:
                break
        try:
            greeting = json.loads(data.split(b"\n", 1)[0])
        except ValueError:
            greeting = None
        if not isinstance(greeting, dict) or "QMP" not in greeting:
            raise TargetError(f"{path}: not a QMP socket (its first line is not a QMP greeting)")
    except socket.timeout:
        raise TargetError(f"{path}: no QMP greeting within {timeout:g} s (is it QEMU's QMP socket, "
                          "and is no other client connected?)") from None
    except OSError as e:
        raise TargetError(f"cannot connect to QMP socket {path}: {e.strerror or e}") from None
    finally:
        s.close()


def open_target(path: Optional[str], qemu: Optional[str], vmlinux: Optional[str],
                arch: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT) -> Target:
    """Open what the user named and load debug info, or raise TargetError.

    ``timeout``: seconds each QMP exchange with a QEMU guest may take; past
    it :class:`~inspector.link.NoAnswerError` (a TargetError)."""
    if not qemu:
        return _open_target(path, None, vmlinux, arch, timeout, {})
    opening: dict = {}  # the link, once there is one: closed if the open fails
    try:
        target = _open_target(path, qemu, vmlinux, arch, timeout, opening)
    except BaseException as e:  # Ctrl-C too: the link is closed either way
        link = opening.get("link")
        why = link.failure() if link is not None else None
        if link is not None:
            link.close()
        if why and isinstance(e, Exception) and not isinstance(e, NoAnswerError):  # a read the relay cut off, whatever drgn made of it
            raise NoAnswerError(why) from None
        raise
    why = target.failure()  # a check that swallowed a failed read
    if why:
        target.close()
        raise NoAnswerError(why)
    return target


def _open_target(path: Optional[str], qemu: Optional[str], vmlinux: Optional[str],
                 arch: Optional[str], timeout: float, opening: dict) -> Target:
    # drgn logs its own warnings (missing symbols, ignored files); we turn the
    # ones that matter into a single line of ours.  PAGEEXT_DEBUG shows them.
    if not os.environ.get("PAGEEXT_DEBUG"):
        logging.getLogger("drgn").setLevel(logging.CRITICAL)
    if qemu and path:
        raise TargetError("give either a core (or /proc/kcore) or --qemu SOCKET, not both")
    if vmlinux is not None:
        _check_vmlinux(vmlinux)
    platform = platform_for(arch)
    presence = None
    notes: tuple[str, ...] = ()
    if qemu:
        kind, shown = "qemu", qemu
        qmp_greeting(qemu, timeout)
        prog = drgn.Program(platform) if platform else drgn.Program()
        link = open_link(prog, qemu, timeout)
        opening["link"] = link
        link.start()
    else:
        shown = path or "/proc/kcore"
        kind = "kcore" if shown == "/proc/kcore" else "vmcore"
        head = _check_core_file(shown)
        notes = _kdump_notes(head, shown)
        if head[:8] == b"KDUMP   " or head[:12] == b"makedumpfile":
            if platform is None:
                # drgn needs the architecture of a kdump file set first.  Its
                # header's utsname.machine names it (QEMU's dump-guest-memory
                # writes "x86_64" or "i686", but "Unknown" for an arm64 guest,
                # QEMU 7.2); else the vmlinux's ELF machine; else the host's.
                platform = (_kdump_platform(shown) or (vmlinux and _elf_platform(vmlinux))
                            or drgn.host_platform)
        elif head[:4] != b"\x7fELF":
            for magic, (tool, how) in COMPRESSED.items():
                if head.startswith(magic):
                    raise TargetError(f"{shown}: a {tool}-compressed file, not a vmcore: decompress it first "
                                      f"({how} {shown}) and open the result")
            raise TargetError(f"{shown}: not a usable vmcore: neither ELF nor kdump-compressed "
                              f"(starts with {head[:8]!r})")
        prog = drgn.Program(platform) if platform else drgn.Program()
        try:
            prog.set_core_dump(shown)
        except PermissionError:
            raise TargetError(f"{shown}: permission denied (reading a live kernel needs root)") from None
        except Exception as e:
            raise TargetError(f"{shown}: not a usable vmcore: {_short(e)}{_format_hint(head, e)}") from None
        if not (prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL):
            raise TargetError(f"{shown}: a core dump, but not of a Linux kernel (no VMCOREINFO)")
        if head[:8] == b"KDUMP   " or head[:12] == b"makedumpfile":
            _check_kdump_block_size(prog, shown)
        if head[:4] == b"\x7fELF" and kind == "vmcore":
            from .reader import elf_presence
            presence = elf_presence(shown, kernel_value(prog, "PAGE_SIZE") or 4096)
            if presence is not None:
                # Every bulk read (inspector.reader) takes pages the core lacks as holes.
                prog.cache["pageext_presence"] = presence
    _load_debug_info(prog, vmlinux, shown)
    _check_i386_translation(prog, kind)
    # For the command line's last word on a failure no rule explains: a
    # kernel newer than the rules were read against gets a partial answer.
    note_target(kernel_release(prog))
    return Target(kind, shown, prog, presence, notes if not qemu else (), link=opening.get("link"))


def _format_hint(head: bytes, e: BaseException) -> str:
    """How to convert a dump drgn cannot read, if we know."""
    if head[:12] == b"makedumpfile":
        return ("; this is makedumpfile's flattened format: convert it with "
                "'makedumpfile -R OUT < FILE' and open OUT")
    return ""


# makedumpfile's diskdump_mod.h: disk_dump_header.status (after signature,
# header_version, utsname and timestamp) and its flags.
KDUMP_STATUS_OFFSET = 424
DUMP_DH_COMPRESSED_INCOMPLETE = 0x8  # the disk filled up: pages after the cut are not in it


KDUMP_BLOCK_SIZE_OFFSET = 428  # disk_dump_header.block_size, right after status


def _check_kdump_block_size(prog: drgn.Program, path: str) -> None:
    """A kdump file whose block size is not the kernel's page size cannot be read.

    QEMU 7.2's dump-guest-memory writes every arm64 guest with block_size
    65536 (target/arm: the largest page size), whatever the guest's; for a
    4K-page guest libkdumpfile then reads page tables from the wrong place
    ("Out-of-bounds PFN").  Say so once, with what works instead."""
    try:
        with _open_nonblocking(path) as f:
            start = 4096 + 16 if f.read(12) == b"makedumpfile" else 0
            f.seek(start + KDUMP_BLOCK_SIZE_OFFSET)
            block, = struct.unpack("<i", f.read(4))
    except (OSError, struct.error):
        return
    page = kernel_value(prog, "PAGE_SIZE")
    if page and block > 0 and block != page:
        raise TargetError(f"{path}: its kdump header says {block}-byte pages, the kernel's are {page} bytes "
                          "(QEMU's dump-guest-memory writes arm64 guests so): libkdumpfile cannot read it; "
                          "dump the guest as ELF (dump-guest-memory without a format) instead")


def _kdump_notes(head: bytes, path: str) -> tuple[str, ...]:
    if head[:8] != b"KDUMP   ":
        return ()
    try:
        with _open_nonblocking(path) as f:
            f.seek(KDUMP_STATUS_OFFSET)
            status, = struct.unpack("<I", f.read(4))
    except (OSError, struct.error):
        return ()
    notes = []
    if status & DUMP_DH_COMPRESSED_INCOMPLETE:
        notes.append("the dump is incomplete (makedumpfile stopped early, e.g. a full disk): the pages after "
                     "the cut are not in it")
    # DUMP_DH_EXCLUDED_VMEMMAP (0x10, -e) needs no note: the struct pages it
    # left out are reported where a read needs them.
    return tuple(notes)


# makedumpfile's disk_dump_header: signature[8], int header_version, then
# struct new_utsname (six 65-byte strings; machine is the fifth).
_KDUMP_MACHINE_OFFSET = 8 + 4 + 4 * 65
_KDUMP_MACHINES = {"x86_64": "X86_64", "i386": "I386", "i486": "I386", "i586": "I386", "i686": "I386",
                   "aarch64": "AARCH64", "ppc64le": "PPC64", "ppc64": "PPC64", "s390x": "S390X"}


def _kdump_platform(path: str) -> Optional[drgn.Platform]:
    try:
        with _open_nonblocking(path) as f:
            start = 0
            if f.read(12) == b"makedumpfile":
                # Flattened format: a 4096-byte header, then (big-endian
                # offset, size) records; the first holds the
                # disk_dump_header at offset 0.
                f.seek(4096)
                off, size = struct.unpack(">qq", f.read(16))
                if off != 0 or size < _KDUMP_MACHINE_OFFSET + 65:
                    return None
                start = 4096 + 16
            f.seek(start + _KDUMP_MACHINE_OFFSET)
            machine = f.read(65).split(b"\0", 1)[0].decode("ascii", "replace")
    except (OSError, struct.error):
        return None
    arch = _KDUMP_MACHINES.get(machine)
    return drgn.Platform(drgn.Architecture[arch]) if arch else None


# ELF e_machine (the ELF header's half-word at offset 18) -> drgn's architecture.
_ELF_MACHINES = {62: "X86_64", 3: "I386", 183: "AARCH64", 21: "PPC64", 22: "S390X"}


def _elf_platform(path: str) -> Optional[drgn.Platform]:
    """The architecture an ELF file (a vmlinux) was built for, or None."""
    try:
        with _open_nonblocking(path) as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    machine, = struct.unpack("<H" if head[5] == 1 else ">H", head[18:20])
    arch = _ELF_MACHINES.get(machine)
    return drgn.Platform(drgn.Architecture[arch]) if arch else None


def _check_i386_translation(prog: drgn.Program, kind: str) -> None:
    """drgn has no i386 page-table walker: say what works instead of failing later.

    Kernel virtual addresses are then readable only where the core itself
    maps them: an ELF from dump-guest-memory with paging=true, or a kdump
    file (libkdumpfile translates i386 addresses itself).  Live QMP and
    paging=false ELF dumps give physical memory only.
    """
    if prog.platform is None or prog.platform.arch != drgn.Architecture.I386:
        return
    try:
        prog["init_uts_ns"].name.release.string_()
        return
    except (drgn.FaultError, NotImplementedError, LookupError):
        pass
    how = "over QMP" if kind == "qemu" else "from this core (physical addresses only)"
    raise TargetError(f"cannot read i386 kernel addresses {how}: drgn has no i386 page-table walker; "
                      "dump the guest with QMP dump-guest-memory paging=true "
                      "or as kdump-zlib and open that")


def _load_debug_info(prog: drgn.Program, vmlinux: Optional[str], shown: str) -> None:
    try:
        if vmlinux:
            prog.load_debug_info([vmlinux], default=False, main=True)
        else:
            prog.load_default_debug_info()
    except drgn.MissingDebugInfoError:
        pass  # checked below: the main module may still have what we need
    except Exception as e:
        raise TargetError(f"loading debug info failed: {_short(e)}") from None
    try:
        prog.type("struct page")
    except LookupError:
        release = vmcoreinfo_release(prog) or "(release unknown)"
        if vmlinux:
            raise TargetError(f"{vmlinux} does not match the kernel in {shown} ({_mismatch(prog, vmlinux, release)})")
        raise TargetError(
            f"no debug info found for kernel {release}: pass -s/--vmlinux with its vmlinux") from None
    if vmlinux and _core_build_id(prog) is None:
        _check_banner(prog, vmlinux, shown)


def _core_build_id(prog: drgn.Program) -> Optional[str]:
    try:
        for line in prog["VMCOREINFO"].string_().decode(errors="replace").splitlines():
            if line.startswith("BUILD-ID="):
                return line.split("=", 1)[1].strip() or None
    except (LookupError, drgn.FaultError, ValueError):
        pass
    return None


def _check_banner(prog: drgn.Program, vmlinux: str, shown: str) -> None:
    """Without a build ID drgn takes any vmlinux it is given: compare the
    kernel's own linux_banner (read where the vmlinux says it is) with the
    vmlinux's.  Unreadable either way: nothing to compare, so nothing said."""
    try:
        raw = prog["linux_banner"].string_()
    except (LookupError, drgn.FaultError, ValueError, drgn.ObjectAbsentError):
        return
    try:
        with open(vmlinux, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            if not raw or m.find(b"\0" + raw + b"\0") >= 0 or m.find(raw + b"\0") >= 0:
                return
    except (OSError, ValueError):
        return
    theirs = raw.decode(errors="replace").strip()
    ours = vmlinux_banner(vmlinux)
    if not theirs.startswith("Linux version "):
        what = "its linux_banner is not where this vmlinux puts it"
    else:
        def build(b: str) -> str:  # "#1 SMP Sat Nov 28 09:21:00 UTC 2026": the build, after the compiler
            return b.rsplit(") ", 1)[-1][:80]
        what = f"the kernel is build {build(theirs)!r}" + (f", the vmlinux {build(ours)!r}" if ours else "")
    raise TargetError(f"{vmlinux} does not match the kernel in {shown} (the core carries no build ID to match "
                      f"by, and {what})")


def _mismatch(prog: drgn.Program, vmlinux: str, release: str) -> str:
    """Why drgn refused a vmlinux: which build IDs or releases differ."""
    core_id = _core_build_id(prog)
    theirs = vmlinux_release(vmlinux)
    if theirs and theirs != release:
        return f"the kernel is {release}, the vmlinux is {theirs}"
    if core_id:
        return f"build ID differs; kernel is {release}, its build ID {core_id[:16]}..."
    return (f"the kernel is {release}; the core carries no build ID to match by, and drgn found no usable "
            "debug info in this file")


def vmlinux_banner(path: str) -> Optional[str]:
    """A vmlinux's "Linux version X ..." banner line (linux_banner), or None."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            i = m.find(b"Linux version ")
            found = None
            while i >= 0:
                m.seek(i)
                banner = m.read(512).split(b"\0", 1)[0]
                # linux_banner: "... #VERSION FLAGS TIMESTAMP\n" (a copy without them comes first)
                if re.search(rb" #\S+ .*\d\d:\d\d:\d\d.*\n$", banner):
                    return banner.decode(errors="replace").strip()
                found = found or banner
                i = m.find(b"Linux version ", i + 1)
            if found:
                return found.decode(errors="replace").strip()
    except (OSError, ValueError):
        return None
    return None


def vmlinux_release(path: str) -> Optional[str]:
    """The release in a vmlinux's "Linux version X ..." banner, or None."""
    banner = vmlinux_banner(path)
    if banner is None:
        try:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                i = m.find(b"Linux version ")
                if i < 0:
                    return None
                m.seek(i)
                banner = m.read(200).decode(errors="replace")
        except (OSError, ValueError):
            return None
    mt = re.match(r"Linux version (\S+)", banner)
    return mt.group(1) if mt else None


def _short(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.errno and not text.strip():
        text = os.strerror(e.errno or errno.EIO)
    return text.splitlines()[0]


def own_tgid(prog: drgn.Program) -> Optional[int]:
    """This process's thread group id as the running kernel (``prog``, opened
    on /proc/kcore) numbers it: ``task_struct.tgid``, the number in the
    initial pid namespace, which is what page_owner records.  ``os.getpid()``
    is that number only outside containers; in a pid namespace it is the
    namespace's own, and the kernel's may be any other.

    The task is found as the group leader whose number at its own (deepest)
    level of ``task_struct.thread_pid`` is ``os.getpid()`` and whose comm is
    ours; when several match (one per container running us as the same pid),
    the start time breaks the tie (``/proc/self/stat`` field 22: clock ticks
    of ``start_boottime``, v5.5 cf25e24db61c; a time namespace shifts it, so
    it only breaks ties).  ``thread_pid`` is v4.19 (2c4704756cab); page_owner
    has a tgid only from v5.18 (bf215eab785a), so every kernel that needs
    this has it.  None when no single task matches.  Kept in ``prog.cache``
    (a watch asks once per sample)."""
    own = os.getpid()
    key = ("pageext_own_tgid", own)
    if key not in prog.cache:
        prog.cache[key] = _find_own_tgid(prog, own)
    return prog.cache[key]


def _find_own_tgid(prog: drgn.Program, own: int) -> Optional[int]:
    from drgn.helpers.linux.pid import find_task, for_each_task

    try:
        with open("/proc/self/stat", "rb") as f:
            stat_line = f.read()
        comm = stat_line[stat_line.index(b"(") + 1:stat_line.rindex(b")")]
        start_ticks = int(stat_line[stat_line.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    ticks_ns = 1_000_000_000 // (os.sysconf("SC_CLK_TCK") or 100)

    def ours(task) -> bool:
        pid = task.thread_pid
        return (int(task.pid) == int(task.tgid) and int(pid.numbers[int(pid.level)].nr) == own
                and task.comm.string_() == comm[:15])

    def started(task) -> Optional[int]:
        for name in ("start_boottime", "real_start_time"):
            try:
                return int(getattr(task, name)) // ticks_ns
            except AttributeError:
                continue
        return None

    try:
        task = find_task(prog, own)  # outside containers: the number is the kernel's
        if task and ours(task) and started(task) in (start_ticks, None):
            return own
        found = [t for t in for_each_task(prog) if ours(t)]
        if len(found) > 1:
            found = [t for t in found if started(t) == start_ticks]
        return int(found[0].tgid) if len(found) == 1 else None
    except (drgn.FaultError, LookupError, AttributeError, ValueError):
        return None
