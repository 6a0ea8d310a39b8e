"""Opening a kernel: the running one, a vmcore, or a live QEMU guest.

This is the first stage of the data flow (target -> layout discovery -> walk
-> verify -> clients -> report).  It turns what the user named on the command
line into a :class:`drgn.Program` with debug info loaded, or raises
:class:`TargetError` with one line a user can act on.  Nothing here writes to
the target: drgn only ever reads /proc/kcore, a core file, or guest memory
over QMP (``pmemsave``-free reads through the QEMU process).

Following drgn's conventions, debug info comes from ``-s/--vmlinux`` when
given; otherwise from drgn's default search.  drgn matches a vmlinux to the
kernel by build ID and silently ignores one that does not match, so a
mismatch shows up as "no debug info": we tell the user which it was.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from dataclasses import dataclass
from typing import Optional

import drgn


class TargetError(Exception):
    """Bad input: reported as one line, exit status 2."""


@dataclass
class Target:
    kind: str  # kcore | vmcore | qemu
    path: str
    prog: drgn.Program

    def to_json(self) -> dict:
        return {"kind": self.kind, "path": self.path}


KDUMP_SIGNATURES = (b"KDUMP   ", b"makedumpfile")


def _check_core_file(path: str) -> bytes:
    """Fail early and clearly on a missing, unreadable or truncated core."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            size = os.fstat(f.fileno()).st_size
            if head[:4] == b"\x7fELF" and head[4] == 2 and size:
                _check_elf_extent(f, head, size, path)
    except FileNotFoundError:
        if path == "/proc/kcore":
            raise TargetError("/proc/kcore: no such file (kernel without CONFIG_PROC_KCORE, or a container "
                              "that hides it); use a vmcore or --qemu") from None
        raise TargetError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TargetError(f"{path}: is a directory, not a vmcore") from None
    except PermissionError:
        raise TargetError(f"{path}: permission denied (reading a live kernel needs root)") from None
    except OSError as e:
        raise TargetError(f"{path}: {e.strerror}") from None
    if path != "/proc/kcore" and len(head) < 64:
        raise TargetError(f"{path}: too short to be a vmcore ({len(head)} bytes)")
    return head


def _check_elf_extent(f, head: bytes, size: int, path: str) -> None:
    """An ELF vmcore whose segments run past the end of the file is truncated."""
    if path == "/proc/kcore":
        return  # kcore reports a huge virtual size; it is never truncated
    phoff, = struct.unpack_from("<Q", head, 32)
    phentsize, phnum = struct.unpack_from("<HH", head, 54)
    f.seek(phoff)
    phdrs = f.read(phentsize * phnum)
    if len(phdrs) < phentsize * phnum:
        raise TargetError(f"{path}: truncated vmcore (program headers cut off)")
    end = 0
    for i in range(phnum):
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from("<IIQQQQ", phdrs, i * phentsize)
        if p_type in (1, 4):  # PT_LOAD, PT_NOTE
            end = max(end, p_offset + p_filesz)
    if end > size:
        raise TargetError(f"{path}: truncated vmcore: segments need {end} bytes, file has {size}")


def _platform(arch: Optional[str]) -> Optional[drgn.Platform]:
    if not arch:
        return None
    try:
        return drgn.Platform(drgn.Architecture[arch.upper()])
    except KeyError:
        names = ", ".join(a.name.lower() for a in drgn.Architecture if a.name != "UNKNOWN")
        raise TargetError(f"unknown architecture {arch!r} (one of: {names})") from None


def open_target(path: Optional[str], qemu: Optional[str], vmlinux: Optional[str],
                arch: Optional[str] = None) -> Target:
    """Open what the user named and load debug info, or raise TargetError."""
    # drgn logs its own warnings (missing symbols, ignored files); we turn the
    # ones that matter into a single line of ours.  PAGEEXT_DEBUG shows them.
    if not os.environ.get("PAGEEXT_DEBUG"):
        logging.getLogger("drgn").setLevel(logging.CRITICAL)
    if qemu and path:
        raise TargetError("give either a core (or /proc/kcore) or --qemu SOCKET, not both")
    if vmlinux is not None:
        if not os.path.isfile(vmlinux):
            raise TargetError(f"{vmlinux}: no such vmlinux")
        try:
            with open(vmlinux, "rb") as f:
                if f.read(4) != b"\x7fELF":
                    raise TargetError(f"{vmlinux}: not an ELF file")
        except PermissionError:
            raise TargetError(f"{vmlinux}: permission denied") from None

    platform = _platform(arch)
    if qemu:
        kind, shown = "qemu", qemu
        if not os.path.exists(qemu) and ":" not in qemu:
            raise TargetError(f"{qemu}: no such QMP socket")
        prog = drgn.Program(platform) if platform else drgn.Program()
        try:
            prog.set_qemu_qmp(qemu)
        except Exception as e:  # drgn raises OSError or ValueError here
            raise TargetError(f"cannot talk to QEMU over {qemu}: {_short(e)}") from None
    else:
        shown = path or "/proc/kcore"
        kind = "kcore" if shown == "/proc/kcore" else "vmcore"
        head = _check_core_file(shown)
        if platform is None and (head[:8] == b"KDUMP   " or head[:12] == b"makedumpfile"):
            # drgn needs the architecture of a kdump file set first.  Its
            # header's utsname.machine names it (QEMU's dump-guest-memory
            # writes "x86_64" or "i686"); else assume the host's.
            platform = _kdump_platform(shown) or drgn.host_platform
        prog = drgn.Program(platform) if platform else drgn.Program()
        try:
            prog.set_core_dump(shown)
        except PermissionError:
            raise TargetError(f"{shown}: permission denied (reading a live kernel needs root)") from None
        except Exception as e:
            raise TargetError(f"{shown}: not a usable vmcore: {_short(e)}") from None
        if not (prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL):
            raise TargetError(f"{shown}: a core dump, but not of a Linux kernel (no VMCOREINFO)")

    _load_debug_info(prog, vmlinux, shown)
    _check_i386_translation(prog, kind)
    return Target(kind, shown, prog)


# makedumpfile's disk_dump_header: signature[8], int header_version, then
# struct new_utsname (six 65-byte strings; machine is the fifth).
_KDUMP_MACHINE_OFFSET = 8 + 4 + 4 * 65
_KDUMP_MACHINES = {"x86_64": "X86_64", "i386": "I386", "i486": "I386", "i586": "I386", "i686": "I386",
                   "aarch64": "AARCH64", "ppc64le": "PPC64", "ppc64": "PPC64", "s390x": "S390X"}


def _kdump_platform(path: str) -> Optional[drgn.Platform]:
    try:
        with open(path, "rb") as f:
            start = 0
            if f.read(12) == b"makedumpfile":
                # Flattened format (QEMU 7.2 writes it): a 4096-byte header,
                # then (big-endian offset, size) records; the first holds
                # the disk_dump_header at offset 0.
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
                      "dump the guest with dump-guest-memory paging=true (scripts/testvm.py dump --paging) "
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
        release = _vmcoreinfo_release(prog)
        if vmlinux:
            raise TargetError(
                f"{vmlinux} does not match the kernel in {shown} (build ID differs; kernel is {release})")
        raise TargetError(
            f"no debug info found for kernel {release}: pass -s/--vmlinux with its vmlinux") from None


def _vmcoreinfo_release(prog: drgn.Program) -> str:
    try:
        for line in prog["VMCOREINFO"].string_().decode(errors="replace").splitlines():
            if line.startswith("OSRELEASE="):
                return line.split("=", 1)[1]
    except Exception:
        pass
    return "(release unknown)"


def _short(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.errno and not text.strip():
        text = os.strerror(e.errno or errno.EIO)
    return text.splitlines()[0]
