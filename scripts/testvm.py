#!/usr/bin/env python3
"""Test VM: boot a kernel under QEMU/TCG, drive it over QMP, run commands in it.

The guest is a busybox initramfs built on the fly.  It mounts a read-write
9p share (``share``) that carries commands and their output whole -- the
8250 serial port stalls above ~4 KB, so it is only the console log -- and,
with ``host_root=True``, the host's root read-only at /host, so the host's
Python, drgn and bcc can run inside the guest (``chroot /host``).

QEMU gets two QMP sockets, because a QMP socket serves one client at a
time: ``qmp.sock`` for drgn (``pageext-inspect --qemu``), ``ctl.sock`` for
this module (hot-plug, pause/resume, dumps).

A kernel whose drivers are modules (Debian's stock kernel, from
scripts/debian-kernel.sh) brings them in ``KERNEL_DIR/modules/`` (a
lib/modules/RELEASE tree with its modules.dep) and names the ones the guest
needs in ``KERNEL_DIR/modules.load``: they go into the initramfs, with their
dependencies, and /init insmods them first.  The kernel image is
``KERNEL_DIR/bzImage`` or, as a distribution ships it, ``KERNEL_DIR/vmlinuz``.

Usage as a library::

    with TestVM(kernel_dir, numa=2, cmdline="page_owner=on") as vm:
        print(vm.run("cat /proc/meminfo").out)
        vm.hot_add("dimm1", 256, node=1); vm.online_all()
        vm.dump("/tmp/core.elf", "elf")

Usage from the shell (same names)::

    scripts/testvm.py boot KERNEL_DIR [--append ARGS] [--host-root]   # stays up until Ctrl-C
    scripts/testvm.py run   VM_DIR  'dmesg | tail'
    scripts/testvm.py hot-add VM_DIR dimm1 256 --node 1
    scripts/testvm.py dump  VM_DIR /tmp/core --format kdump-zlib

kdump: a guest booted with ``crashkernel=`` loads its own bzImage and
initramfs as its capture kernel (``kexec -p``, the host's kexec-tools through
/host; an arm64 guest gets Debian's arm64 kexec-tools and makedumpfile instead,
a small root made by scripts/kdump-root.sh and shared at /host the same way,
and loads its Image with ``kexec -s -p``: its kernel has KEXEC_FILE only).  After a panic the capture kernel runs the same /init, which sees
/proc/vmcore, runs the host's makedumpfile on it once per requested dump,
writing onto the share, and powers off; QEMU exits::

    with TestVM(kernel_dir, cmdline="page_owner=on", crashkernel="160M") as vm:
        core = vm.crash(how="sysrq", makedumpfile="-c -d 31", out="/tmp/vmcore")

    scripts/testvm.py boot KERNEL_DIR --crashkernel 160M --workdir /tmp/vm &
    scripts/testvm.py crash /tmp/vm --how oom --makedumpfile '-c -d 31' -o /tmp/vmcore
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from qemu.qmp.legacy import QEMUMonitorProtocol

BUSYBOX = "/bin/busybox"
# qemu binary per guest architecture.  An i386 guest (the 32-bit page_idle
# kernel) gets Debian's i386 busybox (scripts/busybox-foreign.sh), no NUMA and
# no DIMM slots: that kernel has neither.  An arm64 guest (scripts/build-kernel.sh
# -a arm64) is QEMU's `virt` machine under TCG with Debian's arm64 busybox.  By
# default it boots from QEMU's device tree: two NUMA nodes (numa-node-id), no
# ACPI, so no memory hotplug (QEMU 7.2's virt has its ACPI GED, which hotplug
# needs, only with firmware).  With uefi=True (boot --uefi) it boots through
# UEFI (qemu-efi-aarch64) with ACPI (acpi=force: the kernel would take the
# device tree first): pc-dimm hot-add works, but the kernel sees one NUMA
# node: the firmware reports its variable-store flash (0x04000000-0x07ffffff,
# MMIO with the WC attribute) in the EFI memory map, 6.12's efi-init.c
# is_memory() takes WC for memory, no SRAT range covers it, and
# memblock_validate_numa_coverage() then fakes a single node
# ("NUMA: no nodes coverage for 64MB of 1088MB RAM").
QEMU = {"x86_64": "qemu-system-x86_64", "i386": "qemu-system-i386", "arm64": "qemu-system-aarch64"}
# What each needs beyond QEMU[arch]: its machine, serial console and apt package.
MACHINE = {"arm64": ["-M", "virt,gic-version=max"]}
CONSOLE = {"arm64": "ttyAMA0"}
QEMU_PACKAGE = {"arm64": "qemu-system-arm", "i386": "qemu-system-x86", "x86_64": "qemu-system-x86"}
# Debian's qemu-efi-aarch64, as two flash devices: the code read-only and a
# copy of the variable store per guest (-bios QEMU_EFI.fd gives the same map).
UEFI_AARCH64 = "/usr/share/AAVMF/AAVMF_CODE.fd"
UEFI_AARCH64_VARS = "/usr/share/AAVMF/AAVMF_VARS.fd"

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /share /host
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp
@INSMOD@
mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 share /share || echo "testvm: no share"
if grep -q hostroot /sys/bus/virtio/drivers/9pnet_virtio/*/mount_tag 2>/dev/null; then
    mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=1048576 hostroot /host && {
        mount -t proc proc /host/proc 2>/dev/null
        mount -t sysfs sys /host/sys 2>/dev/null
        mount -t devtmpfs dev /host/dev 2>/dev/null
        # A tmpfs on /host/tmp gives chrooted programs a writable /tmp, but
        # hides the host's /tmp: keep a view of it first, then bring back the
        # host paths under /tmp the guest must see (a project cloned there,
        # its venv).
        mkdir -p /hosttmp && mount --bind /host/tmp /hosttmp
        mount -t tmpfs tmpfs /host/tmp 2>/dev/null
        for p in @HOST_TMP_PATHS@; do
            mkdir -p "/host$p" && mount --bind "/hosttmp${p#/tmp}" "/host$p"
        done
        mount -t debugfs debugfs /host/sys/kernel/debug 2>/dev/null
        # The share as chrooted programs see it (kexec, makedumpfile).
        mkdir -p /host/tmp/testvm-share && mount --bind /share /host/tmp/testvm-share
    }
fi
# A capture kernel (kexec -p by TestVM.load_capture_kernel) runs this same
# initramfs: it writes the requested dumps of /proc/vmcore and powers off.
if [ -e /proc/vmcore ] && grep -q testvm.capture /proc/cmdline; then
    exec sh /capture.sh
fi
mkdir -p /share/cmd /share/out
echo ready > /share/ready
echo "testvm: ready"
# Command loop: the host drops ID.sh into /share/cmd; we answer with
# ID.out, ID.err and, last, ID.rc in /share/out.
while true; do
    for f in /share/cmd/*.sh; do
        [ -e "$f" ] || continue
        id=${f##*/}; id=${id%.sh}
        sh "$f" > /share/out/$id.out 2> /share/out/$id.err
        echo $? > /share/out/$id.rc.tmp
        mv /share/out/$id.rc.tmp /share/out/$id.rc
        rm -f "$f"
    done
    sleep 0.05
done
"""

# The capture kernel's script, after INIT's mounts.  /share/kdump/jobs holds a
# line per dump, "NAME DISK MAKEDUMPFILE-OPTIONS..."; each is written to
# /share/kdump/NAME by the host's makedumpfile (chrooted, so with the host's
# libraries; /host/tmp is a tmpfs, the writable /tmp it needs), its messages
# to NAME.log, its exit status to NAME.rc, its start and end (uptime) to
# NAME.time.  With DISK other than "-" it writes into a tmpfs of that size --
# a disk that fills up -- and what it wrote is copied over after: DISK is a
# tmpfs size (8m, 512k) or N% of the size of the first dump, vmcore-0.
# Flattened output (-F) goes to standard output.  Then "done", power off.
CAPTURE = r"""#!/bin/busybox sh
k=/share/kdump
echo "testvm: capture kernel: $(cat /proc/cmdline)"
read up rest < /proc/uptime; echo $up > $k/capture.up
# makedumpfile runs chrooted in R: the host's root, or another root under it
# named in $k/makedumpfile.root (scripts/kdump-root.sh amd64 trixie), set up
# like /host: its own /proc, a tmpfs /tmp, the share inside.
R=/host
if [ -s $k/makedumpfile.root ]; then
    R=/host$(cat $k/makedumpfile.root)
    { mount -t proc proc $R/proc && mount -t tmpfs tmpfs $R/tmp && mkdir -p $R/tmp/testvm-share &&
      mount --bind /share $R/tmp/testvm-share; } || echo "cannot set up $R for makedumpfile" > $k/error
fi
[ -x $R/usr/bin/makedumpfile ] || echo "no $R/usr/bin/makedumpfile (host root not mounted?)" > $k/error
while read -r name disk args; do
    [ -n "$name" ] || continue
    dir=/tmp/testvm-share/kdump
    if [ "$disk" != - ]; then
        dir=/tmp/disk-$name
        case $disk in *%) disk=$(( $(stat -c %s $k/vmcore-0) * ${disk%\%} / 100 / 1024 ))k ;; esac
        mkdir -p $R$dir && mount -t tmpfs -o size=$disk disk $R$dir
    fi
    read t0 rest < /proc/uptime
    case " $args " in
        *" -F "*) chroot $R makedumpfile $args /proc/vmcore < /dev/null > $R$dir/$name 2> $k/$name.log ;;
        *) chroot $R makedumpfile $args /proc/vmcore $dir/$name < /dev/null > $k/$name.log 2>&1 ;;
    esac
    echo $? > $k/$name.rc
    read t1 rest < /proc/uptime
    echo $t0 $t1 > $k/$name.time
    if [ "$disk" != - ]; then
        df -k $R$dir | tail -1 >> $k/$name.log
        [ -e $R$dir/$name ] && cp $R$dir/$name $k/$name
        umount $R$dir
    fi
done < $k/jobs
dmesg > $k/capture.dmesg
sync
echo done > $k/done
poweroff -f
"""
# The capture kernel's command line, after kexec-tools' own (elfcorehdr=,
# memmap=): one CPU, devices reset, and the marker INIT looks for.  panic=-1
# again: a capture kernel that panics reboots, and QEMU (-no-reboot) exits.
CAPTURE_APPEND = "panic=-1 nr_cpus=1 reset_devices irqpoll testvm.capture"  # after console= (CONSOLE)
# Where the share is for programs chrooted into /host (see INIT).
CHROOT_SHARE = "/tmp/testvm-share"
# How crash() panics the guest: "oom" runs scripts/leaker.c (built static on
# the host) with vm.panic_on_oom=1 on a tmpfs without a size limit; "wait"
# triggers nothing (the guest was set up to panic by itself).
HOW = {"sysrq": "echo c > /proc/sysrq-trigger",
       "oom": "echo 1 > /proc/sys/vm/panic_on_oom; mkdir -p /leak; mount -t tmpfs -o size=0 leak /leak; "
              "echo $$ > /share/kdump/leaker.pid; "
              "exec /share/kdump/leaker -f /leak/leak {leaker}",
       "wait": None}


@dataclass
class Dump:
    """One makedumpfile run in the capture kernel, and (after crash()) its outcome."""
    args: str = "-c -d 31"  # makedumpfile's options (split on blanks, no quoting)
    out: Optional[str | os.PathLike] = None  # host path (default: the VM dir)
    disk: Optional[str] = None  # write into a tmpfs this big first, a disk that fills up: "8m", "90%" of the first
    path: Optional[Path] = None  # where it landed, None if makedumpfile wrote nothing
    rc: Optional[int] = None
    log: str = ""
    seconds: Optional[float] = None  # makedumpfile's run time in the capture kernel


class VMError(Exception):
    pass


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def check(self) -> "Result":
        if self.rc:
            raise VMError(f"guest command failed ({self.rc}): {self.err.strip()[-500:]}")
        return self


def host_tmp_paths() -> list[str]:
    """Host paths under /tmp the guest needs in /host: this project and its venv."""
    here = Path(__file__).resolve().parent.parent
    paths = {str(here), os.path.realpath(sys.prefix)}
    return sorted(p for p in paths if p.startswith("/tmp/"))


def kernel_image(kernel_dir: Path) -> Path:
    """The bootable image in a kernel directory: bzImage (x86) or Image (arm64) as built, or vmlinuz as Debian ships it."""
    for name in ("bzImage", "Image", "vmlinuz"):
        if (kernel_dir / name).is_file():
            return kernel_dir / name
    raise VMError(f"{kernel_dir}: no bzImage, Image or vmlinuz (run scripts/build-kernel.sh or scripts/debian-kernel.sh)")


def kernel_arch(kernel_dir: Path) -> str:
    """The guest architecture a kernel directory was built for: arm64 if it holds an Image, else x86_64."""
    return "arm64" if (Path(kernel_dir) / "Image").is_file() else "x86_64"


def module_name(path: str) -> str:
    """A module's name as the kernel spells it: kernel/fs/9p/9p.ko.xz -> 9p, virtio-pci -> virtio_pci."""
    base = path.rsplit("/", 1)[-1]
    base = base.split(".ko", 1)[0] if ".ko" in base else base
    return base.replace("-", "_")


def modules_to_load(modules_dir: Path, names: list[str]) -> list[Path]:
    """The module files for ``names`` and their dependencies, in load order.

    Read from ``modules.dep`` (each line: a module, then every module it
    needs); a module in ``modules.builtin`` needs no file.
    """
    dep_file = modules_dir / "modules.dep"
    if not dep_file.is_file():
        raise VMError(f"{dep_file}: missing (modules were asked for: {', '.join(names)})")
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in dep_file.read_text().splitlines():
        path, _, rest = line.partition(":")
        if path:
            deps[module_name(path)] = (path, [module_name(d) for d in rest.split()])
    builtin_file = modules_dir / "modules.builtin"
    builtin = {module_name(p) for p in builtin_file.read_text().split()} if builtin_file.is_file() else set()
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in seen or name in builtin:
            return
        if name not in deps:
            via = f" (needed by {' <- '.join(reversed(chain))})" if chain else ""
            raise VMError(f"no module {name} in {dep_file}{via}")
        seen.add(name)
        path, needs = deps[name]
        for need in needs:
            visit(need, chain + (name,))
        order.append(modules_dir / path)

    for name in names:
        visit(module_name(name), ())
    return order


def module_bytes(path: Path) -> bytes:
    """A module's ELF bytes: busybox insmod takes plain .ko only, so unpack .ko.xz/.gz/.zst here."""
    if not path.is_file():
        raise VMError(f"{path}: module file missing")
    if path.suffix == ".xz":
        import lzma
        return lzma.decompress(path.read_bytes())
    if path.suffix == ".gz":
        import gzip
        return gzip.decompress(path.read_bytes())
    if path.suffix == ".zst":
        if not shutil.which("zstd"):
            raise VMError(f"{path}: zstd is not installed (apt-get install zstd)")
        return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    return path.read_bytes()


def busybox_for(arch: str) -> str:
    """The busybox binary for an ``arch`` guest."""
    if arch == "x86_64":
        if not os.path.exists(BUSYBOX):
            raise VMError("busybox-static is not installed (apt-get install busybox-static)")
        return BUSYBOX
    script = Path(__file__).resolve().parent / "busybox-foreign.sh"
    proc = subprocess.run([str(script), arch], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        raise VMError(f"no {arch} busybox: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip().splitlines()[-1]


# The C compiler for a guest architecture's helpers, and its Debian package.
CC = {"x86_64": ("gcc", "build-essential"), "arm64": ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu")}


def helper(name: str, arch: str = "x86_64") -> Path:
    """scripts/NAME.c built static with the host's gcc (the cross gcc for an
    arm64 guest), cached by its source's hash in $PAGEEXT_CACHE/tools (never
    committed)."""
    if arch not in CC:
        raise VMError(f"no compiler for {arch} guests' helpers (one of: {', '.join(CC)})")
    cc, package = CC[arch]
    src = Path(__file__).resolve().parent / f"{name}.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    suffix = "" if arch == "x86_64" else f"-{arch}"
    out = Path(os.environ.get("PAGEEXT_CACHE", "/var/cache/pageext-inspect")) / "tools" / f"{name}-{digest}{suffix}"
    if not out.exists():
        if not shutil.which(cc):
            raise VMError(f"{cc} not found (apt-get install {package})")
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(f"{out.name}.{os.getpid()}")
        proc = subprocess.run([cc, "-static", "-O2", "-Wall", "-o", str(part), str(src)],
                              capture_output=True, text=True)
        if proc.returncode:
            raise VMError(f"gcc {src.name}: {proc.stderr.strip()[-500:]}")
        os.replace(part, out)  # whole, even if another session builds it too
    return out


def host_root_for(arch: str) -> str:
    """What a guest sees at /host: the host's own root (x86_64), else the
    guest arch's kexec/makedumpfile root from scripts/kdump-root.sh."""
    if arch == "x86_64":
        return "/"
    script = Path(__file__).resolve().parent / "kdump-root.sh"
    proc = subprocess.run([str(script), arch], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        raise VMError(f"no {arch} root for /host: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip().splitlines()[-1]


def newer_makedumpfile(suite: str = "trixie") -> str:
    """A root with Debian ``suite``'s makedumpfile for an x86_64 guest's
    capture kernel (scripts/kdump-root.sh amd64 SUITE): bookworm's 1.7.2
    misreads the page types of 6.12 and later (see that script), trixie's
    1.7.6 reads them."""
    script = Path(__file__).resolve().parent / "kdump-root.sh"
    proc = subprocess.run([str(script), "amd64", suite], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        raise VMError(f"no {suite} makedumpfile root: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip().splitlines()[-1]


def build_initramfs(path: Path, arch: str = "x86_64", modules: list[Path] = ()) -> None:
    """A busybox initramfs whose /init is INIT, with CAPTURE as /capture.sh
    (needs Debian's busybox-static).

    ``modules`` (in load order) are put in /lib/modules and insmodded by
    /init before it mounts the 9p share.
    """
    busybox = busybox_for(arch)
    root = Path(tempfile.mkdtemp(prefix="testvm-initramfs-"))
    try:
        (root / "bin").mkdir()
        shutil.copy(busybox, root / "bin" / "busybox")
        (root / "bin" / "sh").symlink_to("busybox")
        paths = " ".join(f"'{p}'" for p in host_tmp_paths())
        insmod = ""
        if modules:
            (root / "lib" / "modules").mkdir(parents=True)
            names = [module_name(m.name) for m in modules]
            for name, m in zip(names, modules):
                (root / "lib" / "modules" / f"{name}.ko").write_bytes(module_bytes(m))
            insmod = (f"for m in {' '.join(names)}; do\n"
                      f"    insmod /lib/modules/$m.ko || echo \"testvm: insmod $m failed\"\n"
                      f"done")
        (root / "init").write_text(INIT.replace("@HOST_TMP_PATHS@", paths).replace("@INSMOD@", insmod))
        (root / "init").chmod(0o755)
        (root / "capture.sh").write_text(CAPTURE)
        for d in ("proc", "sys", "dev", "tmp", "share", "host", "hosttmp"):
            (root / d).mkdir()
        files = subprocess.run(["find", "."], cwd=root, check=True, capture_output=True).stdout
        with open(path, "wb") as out:
            subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files,
                           stdout=out, check=True)
    finally:
        shutil.rmtree(root)


class TestVM:
    """One QEMU guest.  Use as a context manager; ``close()`` kills it."""

    __test__ = False  # not a pytest class

    def __init__(self, kernel_dir: str | os.PathLike, *, mem_mb: int = 1024, numa: int = 2,
                 slots: int = 4, maxmem_mb: int = 4096, cmdline: str = "",
                 host_root: bool = False, workdir: Optional[str] = None, smp: int = 2,
                 boot_timeout: float = 180.0, gdb_port: Optional[int] = None, arch: Optional[str] = None,
                 modules: Optional[list[str]] = None, crashkernel: Optional[str] = None, cpu: str = "max",
                 extra_args: Sequence[str] = (), uefi: bool = False):
        """``crashkernel="160M"`` reserves memory for kdump (and implies
        ``host_root``: kexec and makedumpfile are the host's); ``crash()``
        loads the capture kernel if ``load_capture_kernel()`` has not.
        ``cpu`` is QEMU's -cpu: "max" has LA57, so the guest runs 5-level
        paging; "max,la57=off" gives the 4-level paging of most machines.
        ``extra_args`` go to QEMU as they are (e.g. another -virtfs share).
        ``arch`` defaults to the kernel directory's (:func:`kernel_arch`).
        ``uefi`` (arm64): boot through UEFI, so that the guest has ACPI and
        memory hotplug -- but one NUMA node (see UEFI_AARCH64); without it the
        kernel boots from QEMU's device tree, with both NUMA nodes and no hotplug."""
        arch = arch or kernel_arch(Path(kernel_dir))
        if arch not in QEMU:
            raise VMError(f"unknown guest arch {arch!r} (one of: {', '.join(QEMU)})")
        self.arch = arch
        self.kernel_dir = Path(kernel_dir)
        # Modules to insmod at boot: as given, else KERNEL_DIR/modules.load, else none.
        load_list = self.kernel_dir / "modules.load"
        if modules is None:
            modules = load_list.read_text().split() if load_list.is_file() else []
        self.modules = list(modules)
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="testvm-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.share = self.dir / "share"
        self.share.mkdir(exist_ok=True)
        self.qmp_path = str(self.dir / "qmp.sock")  # for drgn
        self.ctl_path = str(self.dir / "ctl.sock")  # for us
        self.console = self.dir / "console.log"
        self.cmdline = cmdline
        if crashkernel:
            self.cmdline = f"{cmdline} crashkernel={crashkernel}".strip()
            host_root = True
        self.proc: Optional[subprocess.Popen] = None
        self.qemu_pid: Optional[int] = None  # an attached VM's QEMU (see _attach)
        self.captured: list[Dump] = []
        self.crash_times: dict[str, float] = {}
        self._qmp: Optional[QEMUMonitorProtocol] = None
        self.cpu = cpu
        self.extra_args = list(extra_args)
        self.uefi = uefi
        self.gdb_port = gdb_port  # QEMU's gdbstub on 127.0.0.1:gdb_port, to stop the guest mid-operation
        # A reused workdir may hold the last guest's files: "ready" among them
        # would make us talk to a guest that has not booted.
        for stale in ("ready", "cmd", "out", "kdump"):
            p = self.share / stale
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        try:
            self._start(mem_mb, numa, slots, maxmem_mb, host_root, smp, boot_timeout)
        except BaseException:
            self.close()
            raise

    # -- lifecycle -------------------------------------------------------
    def _start(self, mem_mb, numa, slots, maxmem_mb, host_root, smp, boot_timeout) -> None:
        bz = kernel_image(self.kernel_dir)
        modules = modules_to_load(self.kernel_dir / "modules", self.modules) if self.modules else []
        qemu = QEMU[self.arch]
        if not shutil.which(qemu):
            raise VMError(f"{qemu} not found (apt-get install {QEMU_PACKAGE[self.arch]})")
        initrd = self.dir / "initramfs.cpio"
        build_initramfs(initrd, self.arch, modules)
        dimms = self.arch in ("x86_64", "arm64")
        memory = f"{mem_mb}M,slots={slots},maxmem={maxmem_mb}M" if dimms else f"{mem_mb}M"
        firmware, append = [], f"console={CONSOLE.get(self.arch, 'ttyS0')} panic=-1"
        if self.arch == "arm64" and self.uefi:
            if not os.path.exists(UEFI_AARCH64):
                raise VMError(f"{UEFI_AARCH64} not found (apt-get install qemu-efi-aarch64)")
            varstore = self.dir / "efivars.fd"
            shutil.copy(UEFI_AARCH64_VARS, varstore)
            firmware = ["-drive", f"if=pflash,format=raw,readonly=on,file={UEFI_AARCH64}",
                        "-drive", f"if=pflash,format=raw,file={varstore}"]
            append = f"{append} acpi=force"
        args = [qemu, *MACHINE.get(self.arch, []), *firmware, "-accel", "tcg", "-cpu", self.cpu,
                "-smp", str(smp), "-m", memory,
                "-kernel", str(bz), "-initrd", str(initrd),
                "-append", f"{append} {self.cmdline}".strip(),
                "-display", "none", "-vga", "none", "-monitor", "none", "-no-reboot",
                "-serial", f"file:{self.console}",
                "-device", "vmcoreinfo",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                "-qmp", f"unix:{self.ctl_path},server=on,wait=off",
                "-virtfs", f"local,path={self.share},mount_tag=share,security_model=none,id=share"]
        if self.gdb_port:
            args += ["-gdb", f"tcp:127.0.0.1:{self.gdb_port}"]
        if host_root:
            args += ["-virtfs", f"local,path={host_root_for(self.arch)},mount_tag=hostroot,security_model=none,"
                     "readonly=on,multidevs=remap,id=hostroot"]
        if numa > 1 and dimms:
            per = mem_mb // numa
            for n in range(numa):
                args += ["-object", f"memory-backend-ram,id=m{n},size={per}M",
                         "-numa", f"node,nodeid={n},memdev=m{n}"
                         + (f",cpus={n % smp}" if numa <= smp else "")]
        args += self.extra_args
        self.qemu_args = args
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=open(self.dir / "qemu.out", "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + boot_timeout
        while not (self.share / "ready").exists():
            if self.proc.poll() is not None:
                raise VMError(f"QEMU exited ({self.proc.returncode}): {self._tail()}")
            if time.time() > deadline:
                self.close()
                raise VMError(f"guest did not come up in {boot_timeout:.0f} s: {self._tail()}")
            time.sleep(0.1)
        self.boot_seconds = boot_timeout - (deadline - time.time())
        self._qmp = QEMUMonitorProtocol(self.ctl_path)
        self._qmp.connect()

    def _tail(self, n: int = 15) -> str:
        text = ""
        for f in (self.dir / "qemu.out", self.console):
            if f.exists():
                text += f.read_text(errors="replace")
        return " | ".join(text.strip().splitlines()[-n:])

    def close(self) -> None:
        """Quit QEMU (over QMP if connected), killing it if it does not go."""
        asked = False
        if self._qmp is not None:
            try:
                self._qmp.cmd("quit")
                asked = True
            except Exception:
                pass
            try:
                self._qmp.close()
            except Exception:
                pass
            self._qmp = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(5 if asked else 0.1)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def __enter__(self) -> "TestVM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- QMP -------------------------------------------------------------
    def qmp(self, cmd: str, **args):
        assert self._qmp is not None
        reply = self._qmp.cmd_raw(cmd, args or None)
        if "error" in reply:
            raise VMError(f"QMP {cmd}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")

    @contextlib.contextmanager
    def ctl_released(self):
        """ctl.sock left free for the block (a QMP socket serves one client:
        e.g. for ``pageext-inspect watch --pause``), connected again after."""
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        try:
            yield self.ctl_path
        finally:
            self._qmp = QEMUMonitorProtocol(self.ctl_path)
            self._qmp.connect()

    def write_vm_json(self) -> Path:
        """vm.json, so that `testvm.py run VM_DIR ...` from another process reaches this guest."""
        path = self.dir / "vm.json"
        path.write_text(json.dumps({"pid": self.proc.pid, "kernel_dir": str(self.kernel_dir.resolve())}))
        return path

    def pause(self) -> None:
        self.qmp("stop")

    def resume(self) -> None:
        self.qmp("cont")

    def dump(self, path: str, fmt: str = "elf", paging: bool = False) -> str:
        """dump-guest-memory to ``path``: fmt is elf or kdump-zlib.

        ``paging=True`` (ELF only) has QEMU walk the guest's page tables and
        give each segment its kernel virtual address: drgn needs that for a
        guest whose page tables it cannot walk itself (i386).
        """
        args = {"paging": paging, "protocol": f"file:{os.path.abspath(path)}"}
        if fmt != "elf":
            args["format"] = fmt
        self.qmp("dump-guest-memory", **args)
        return path

    def hot_add(self, dimm_id: str, size_mb: int, node: int = 0, wait: float | None = 60.0) -> list[int]:
        """Plug a pc-dimm and return its memory block numbers; they stay offline until onlined.

        device_add returns when QEMU has raised the ACPI event; the guest adds the memory
        later, from its kacpi_hotplug workqueue (acpi_memory_device_add -> add_memory), so
        memoryN/ may not exist yet.  With wait (seconds, the default) this returns only when
        every block of the DIMM is in /sys/devices/system/memory; wait=None does not look.
        """
        self.qmp("object-add", **{"qom-type": "memory-backend-ram", "id": f"mem-{dimm_id}",
                                  "size": size_mb << 20})
        self.qmp("device_add", driver="pc-dimm", id=dimm_id, memdev=f"mem-{dimm_id}", node=node)
        if wait is None:
            return []
        blocks = self.dimm_blocks(dimm_id)
        self.wait_blocks(blocks, present=True, timeout=wait)
        return blocks

    def block_size(self) -> int:
        """The guest's memory block size in bytes (/sys/devices/system/memory/block_size_bytes)."""
        return int(self.run("cat /sys/devices/system/memory/block_size_bytes").check().out.strip(), 16)

    def dimm_blocks(self, dimm_id: str) -> list[int]:
        """The memory block numbers a plugged DIMM spans."""
        addr, size = self.dimm_address(dimm_id)
        bb = self.block_size()
        return list(range(addr // bb, (addr + size) // bb))

    def wait_blocks(self, blocks, present: bool, timeout: float = 60.0) -> dict[int, str]:
        """Poll until every block is (present) or is not (not present) in the guest's sysfs;
        the states then.  VMError after timeout seconds."""
        deadline = time.time() + timeout
        while True:
            states = self.memory_blocks()
            if all((b in states) == present for b in blocks):
                return states
            if time.time() >= deadline:
                raise VMError(f"memory blocks {list(blocks)} still {'absent' if present else 'present'} "
                              f"after {timeout:.0f} s: {states}")
            time.sleep(0.5)

    def dimm_address(self, dimm_id: str) -> tuple[int, int]:
        """(physical address, size) of a plugged DIMM."""
        for dev in self.qmp("query-memory-devices"):
            data = dev.get("data", {})
            if data.get("id") == dimm_id:
                return data["addr"], data["size"]
        raise VMError(f"no DIMM {dimm_id}")

    def hot_remove(self, dimm_id: str, timeout: float = 120.0) -> None:
        """device_del and wait for DEVICE_DELETED (the guest must let go)."""
        assert self._qmp is not None
        self._qmp.clear_events()
        self.qmp("device_del", id=dimm_id)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                ev = self._qmp.pull_event(wait=1.0)
            except (TimeoutError, asyncio.TimeoutError):
                continue
            if ev and ev.get("event") == "DEVICE_DELETED" and ev.get("data", {}).get("device") == dimm_id:
                self.qmp("object-del", id=f"mem-{dimm_id}")
                return
        raise VMError(f"DIMM {dimm_id} was not released by the guest in {timeout:.0f} s")

    # -- guest commands ---------------------------------------------------
    def submit(self, script: str) -> str:
        """Hand a shell script to the guest's command loop; its id, not waiting."""
        cid = uuid.uuid4().hex[:12]
        tmp = self.share / "cmd" / f".{cid}.tmp"
        tmp.write_text(script + "\n")
        tmp.rename(self.share / "cmd" / f"{cid}.sh")
        return cid

    def run(self, script: str, timeout: float = 600.0) -> Result:
        """Run a shell script in the guest; output comes back whole over 9p."""
        cid = self.submit(script)
        out_dir = self.share / "out"
        rc_file = out_dir / f"{cid}.rc"
        deadline = time.time() + timeout
        while not rc_file.exists():
            if not self._qemu_alive():
                raise VMError(f"QEMU exited while running {script!r}: {self._tail()}")
            if time.time() > deadline:
                raise VMError(f"guest command timed out after {timeout:.0f} s: {script!r}")
            time.sleep(0.05)
        res = Result(int(rc_file.read_text().strip() or 1),
                     (out_dir / f"{cid}.out").read_text(errors="replace"),
                     (out_dir / f"{cid}.err").read_text(errors="replace"))
        for suffix in ("rc", "out", "err"):
            (out_dir / f"{cid}.{suffix}").unlink(missing_ok=True)
        if res.rc == 137 and "dmesg" not in script:
            # SIGKILL: most often the guest's OOM killer; say what the kernel said.
            said = self.run("dmesg | grep -i -E 'out of memory|oom-kill|killed process' | tail -n 5", timeout=60)
            res = Result(res.rc, res.out, res.err + (f"[guest dmesg] {said.out.strip()}" if said.out.strip()
                                                     else "[guest dmesg: no OOM kill]"))
        return res

    def memory_blocks(self) -> dict[int, str]:
        """{block number: state} from /sys/devices/system/memory."""
        out = self.run("cd /sys/devices/system/memory && for m in memory[0-9]*; do "
                       "echo ${m#memory} $(cat $m/state); done").check().out
        return {int(a): b for a, b in (line.split() for line in out.splitlines())}

    def block_nodes(self) -> dict[int, int]:
        """{block number: node} from /sys/devices/system/node/nodeN/memoryM links."""
        out = self.run("cd /sys/devices/system/node && for n in node*; do for m in $n/memory[0-9]*; do "
                       "[ -e $m ] && echo ${n#node} ${m##*/memory}; done; done").check().out
        return {int(m): int(n) for n, m in (line.split() for line in out.splitlines())}

    def set_blocks(self, blocks, state: str) -> Result:
        """Write state (online, offline, online_movable) to each memory block."""
        lines = [f"echo {state} > /sys/devices/system/memory/memory{b}/state" for b in blocks]
        return self.run("\n".join(lines))

    def online_all(self) -> list[int]:
        offline = [b for b, s in self.memory_blocks().items() if s == "offline"]
        self.set_blocks(offline, "online").check()
        return offline

    def dmesg(self) -> str:
        return self.run("dmesg").check().out

    # -- kdump -----------------------------------------------------------
    def capture_loaded(self) -> bool:
        """Whether a capture kernel is loaded; VMError if no crashkernel= memory is reserved."""
        out = self.run("cat /sys/kernel/kexec_crash_size /sys/kernel/kexec_crash_loaded").check().out.split()
        if out[0] == "0":
            raise VMError("the guest has no crashkernel= memory (boot it with crashkernel=160M)")
        return out[1] == "1"

    def load_capture_kernel(self, append: str = "") -> None:
        """``kexec -p`` this guest's own kernel image and initramfs (the
        host's kexec-tools, chrooted into /host; an arm64 guest's are
        Debian's arm64 ones, see host_root_for) with its console,
        CAPTURE_APPEND and ``append``.  arm64 loads through kexec_file_load
        (``-s``): its kernel has KEXEC_FILE, not KEXEC."""
        arch = getattr(self, "arch", kernel_arch(self.kernel_dir))  # an attached VM has no arch of its own
        if arch not in ("x86_64", "arm64"):
            raise VMError(f"no kdump in the test VM for an {arch} guest (x86_64 and arm64 only)")
        kd = self.share / "kdump"
        kd.mkdir(exist_ok=True)
        self.capture_loaded()  # crashkernel= memory is reserved
        image = kernel_image(self.kernel_dir)
        shutil.copy(image, kd / image.name)
        shutil.copy(self.dir / "initramfs.cpio", kd / "initramfs.cpio")
        d = f"{CHROOT_SHARE}/kdump"
        file_load = " -s" if arch == "arm64" else ""
        res = self.run(f"[ -x /host/usr/sbin/kexec ] || {{ echo 'no /host/usr/sbin/kexec (scripts/setup.sh "
                       f"installs kexec-tools; boot with the host root)' >&2; exit 1; }}; "
                       f"chroot /host kexec{file_load} -p {d}/{image.name} --initrd={d}/initramfs.cpio "
                       f"--append='console={CONSOLE.get(arch, 'ttyS0')} {CAPTURE_APPEND} {append}'".rstrip())
        if res.rc or not self.capture_loaded():
            raise VMError(f"kexec -p failed ({res.rc}): {(res.err or res.out).strip()[-300:]}")

    def crash(self, how: str = "sysrq", makedumpfile: str = "-c -d 31",
              out: Optional[str | os.PathLike] = None, *, disk: Optional[str] = None,
              extra: Sequence[Dump] = (), leaker: str = "", timeout: float = 600.0,
              makedumpfile_root: Optional[str] = None) -> Path:
        """Panic the guest and let its capture kernel write the dump(s).

        ``how``: "sysrq" (echo c > /proc/sysrq-trigger), "oom" (scripts/leaker.c
        with ``leaker`` options until vm.panic_on_oom=1 panics), "wait" (the
        guest panics by itself).  The first dump is ``makedumpfile`` to ``out``;
        ``extra`` dumps are further makedumpfile runs on the same /proc/vmcore.
        Each Dump ends up in ``self.captured`` with its exit status, messages
        and run time; ``self.crash_times`` has the cycle's host-side times (s).
        ``makedumpfile_root``: a directory of the host's root with another
        makedumpfile (:func:`newer_makedumpfile`); default the host's own.
        Returns the first dump's path once the capture kernel has powered off;
        VMError if that dump failed or the capture never finished.
        """
        if how not in HOW:
            raise VMError(f"unknown --how {how!r} (one of: {', '.join(HOW)})")
        dumps = [Dump(makedumpfile, out, disk), *extra]
        kd = self.share / "kdump"
        kd.mkdir(exist_ok=True)
        for stale in kd.iterdir():
            if stale.name not in ("bzImage", "Image", "vmlinuz", "initramfs.cpio"):
                stale.unlink()
        names = [f"vmcore-{i}" for i in range(len(dumps))]
        for i, d in enumerate(dumps):
            if d.disk is not None and not re.fullmatch(r"\d+[kmg]?" + (r"|\d+%" if i else ""), str(d.disk)):
                raise VMError(f"bad disk size {d.disk!r} (8m, 512k{', or N% of the first dump' if i else ''})")
        for d, name in zip(dumps, names):
            d.out = Path(d.out or self.dir / name)
            if not d.out.parent.is_dir():
                raise VMError(f"{d.out.parent}: no such directory")
        (kd / "jobs").write_text("".join(f"{n} {d.disk or '-'} {d.args}\n" for d, n in zip(dumps, names)))
        if makedumpfile_root:
            if host_root_for(getattr(self, "arch", kernel_arch(self.kernel_dir))) != "/":
                raise VMError("makedumpfile_root needs an x86_64 guest (the host's root at /host)")
            (kd / "makedumpfile.root").write_text(str(Path(makedumpfile_root).resolve()) + "\n")
        if not self.capture_loaded():
            self.load_capture_kernel()
        if how == "oom":
            shutil.copy(helper("leaker", getattr(self, "arch", kernel_arch(self.kernel_dir))), kd / "leaker")
        t0 = time.time()
        if HOW[how]:
            self.submit(HOW[how].format(leaker=leaker))
        self._wait_capture(kd, t0, timeout)
        for d, name in zip(dumps, names):
            rc = kd / f"{name}.rc"
            d.rc = int(rc.read_text()) if rc.exists() else None
            d.log = (kd / f"{name}.log").read_text(errors="replace") if (kd / f"{name}.log").exists() else ""
            if (kd / f"{name}.time").exists():
                a, b = (float(x) for x in (kd / f"{name}.time").read_text().split())
                d.seconds = b - a
            d.path = Path(shutil.move(kd / name, d.out)) if (kd / name).exists() else None
        self.captured = dumps
        first = dumps[0]
        if first.rc != 0 or first.path is None:
            raise VMError(f"makedumpfile {first.args} failed ({first.rc}): "
                          f"{' | '.join(first.log.strip().splitlines()[-3:])}")
        return first.path

    def _wait_capture(self, kd: Path, t0: float, timeout: float) -> None:
        """Until the capture kernel has written "done" and QEMU has exited."""
        times = self.crash_times = {}
        deadline = t0 + timeout
        while True:
            now = time.time()
            if "capture_up" not in times and (kd / "capture.up").exists():
                times["capture_up"] = now - t0
            if "done" not in times and (kd / "done").exists():
                times["done"] = now - t0
            if not self._qemu_alive():
                times["exit"] = now - t0
                break
            if now > deadline:
                raise VMError(f"no capture within {timeout:.0f} s: {self._tail()}")
            time.sleep(0.1)
        if "done" not in times:
            raise VMError(f"QEMU exited before the capture kernel was done: {self._capture_failure(kd)}")

    def _capture_failure(self, kd: Path) -> str:
        """Why the capture did not finish: our script's error, else the last
        panic line of the console (the first kernel's when kdump never ran)."""
        if (kd / "error").exists():
            return (kd / "error").read_text().strip()
        text = self.console.read_text(errors="replace") if self.console.exists() else ""
        capture = text.rfind("testvm: capture kernel")
        panics = [ln for ln in text[max(capture, 0):].splitlines() if "Kernel panic" in ln]
        if capture < 0:
            return f"the capture kernel never started ({panics[-1].strip() if panics else self._tail(3)})"
        return f"in the capture kernel: {panics[-1].strip() if panics else self._tail(3)}"

    def _qemu_alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        if self.qemu_pid is None:
            return True
        try:
            os.kill(self.qemu_pid, 0)
        except ProcessLookupError:
            return False
        return True


def _cli() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("boot", help="boot a kernel and keep it up until Ctrl-C")
    b.add_argument("kernel_dir")
    b.add_argument("--append", default="page_owner=on page_table_check=on")
    b.add_argument("--host-root", action="store_true", help="share / read-only at /host in the guest")
    b.add_argument("--workdir")
    b.add_argument("--mem", type=int, default=1024, help="boot memory in MiB")
    b.add_argument("--arch", choices=sorted(QEMU),
                   help="guest architecture (default: arm64 for a kernel directory with an Image, else x86_64)")
    b.add_argument("--modules", help="comma-separated modules to insmod at boot "
                   "(default: those named in KERNEL_DIR/modules.load)")
    b.add_argument("--uefi", action="store_true",
                   help="arm64: boot through UEFI with ACPI (memory hotplug; the kernel then sees one NUMA node)")
    b.add_argument("--crashkernel", metavar="SIZE",
                   help="reserve SIZE (e.g. 160M) for kdump and load the guest's own kernel as its "
                        "capture kernel (implies --host-root)")
    r = sub.add_parser("run", help="run a shell command in a booted VM")
    r.add_argument("vm_dir")
    r.add_argument("script")
    h = sub.add_parser("hot-add", help="plug a DIMM")
    h.add_argument("vm_dir"); h.add_argument("dimm_id"); h.add_argument("size_mb", type=int)
    h.add_argument("--node", type=int, default=0)
    d = sub.add_parser("hot-remove", help="unplug a DIMM")
    d.add_argument("vm_dir"); d.add_argument("dimm_id")
    m = sub.add_parser("dump", help="write a vmcore")
    m.add_argument("vm_dir"); m.add_argument("path")
    m.add_argument("--format", default="elf", choices=["elf", "kdump-zlib", "kdump-lzo", "kdump-snappy"])
    m.add_argument("--paging", action="store_true", help="virtual addresses in the ELF (needed for i386)")
    c = sub.add_parser("crash", help="panic a VM booted with --crashkernel; its capture kernel's "
                                      "makedumpfile writes the vmcore")
    c.add_argument("vm_dir")
    c.add_argument("--how", default="sysrq", choices=list(HOW),
                   help="sysrq: echo c > /proc/sysrq-trigger; oom: scripts/leaker.c until "
                        "vm.panic_on_oom=1 panics; wait: the guest will panic by itself")
    c.add_argument("--makedumpfile", default="-c -d 31", metavar="OPTIONS",
                   help="makedumpfile's options (default: '-c -d 31'; a single one as --makedumpfile=-E)")
    c.add_argument("-o", "--output", required=True, help="where the vmcore goes")
    c.add_argument("--disk", metavar="SIZE", help="makedumpfile writes into a tmpfs of SIZE (8m, 512k) first: "
                                                  "a disk that fills up")
    c.add_argument("--leaker", default="", metavar="OPTIONS", help="scripts/leaker.c's options for --how oom")
    c.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()
    try:
        if args.cmd == "boot":
            vm = TestVM(args.kernel_dir, cmdline=args.append, host_root=args.host_root,
                        workdir=args.workdir, mem_mb=args.mem, arch=args.arch, crashkernel=args.crashkernel,
                        uefi=args.uefi,
                        modules=None if args.modules is None else [m for m in args.modules.split(",") if m])
            if args.crashkernel:
                vm.load_capture_kernel()
            print(f"booted in {vm.boot_seconds:.1f} s; VM dir {vm.dir}\n"
                  f"  drgn:  pageext-inspect --qemu {vm.qmp_path} -s {args.kernel_dir}/vmlinux\n"
                  f"  shell: {sys.argv[0]} run {vm.dir} 'dmesg | tail'"
                  + (f"\n  kdump: {sys.argv[0]} crash {vm.dir} --how sysrq -o vmcore" if args.crashkernel else ""),
                  flush=True)
            vm.write_vm_json()
            vm._qmp.close()  # ctl.sock takes one client: leave it to `testvm.py run/hot-add/...`
            vm._qmp = None
            try:
                vm.proc.wait()
            except KeyboardInterrupt:
                vm.close()
            return 0
        # `run` goes through the share only: it leaves ctl.sock to whoever holds it.
        vm = _attach(Path(args.vm_dir), qmp=args.cmd != "run")
        if args.cmd == "run":
            res = vm.run(args.script)
            sys.stdout.write(res.out)
            sys.stderr.write(res.err)
            return res.rc
        if args.cmd == "hot-add":
            print(*vm.hot_add(args.dimm_id, args.size_mb, args.node))  # the DIMM's memory blocks
        elif args.cmd == "hot-remove":
            vm.hot_remove(args.dimm_id)
        elif args.cmd == "dump":
            vm.dump(args.path, args.format, args.paging)
        elif args.cmd == "crash":
            path = vm.crash(args.how, args.makedumpfile, args.output, disk=args.disk,
                            leaker=args.leaker, timeout=args.timeout)
            d, t = vm.captured[0], vm.crash_times
            print(f"{path}: {path.stat().st_size} bytes; makedumpfile {d.seconds:.1f} s in the capture "
                  f"kernel; capture kernel up {t.get('capture_up', 0):.1f} s and QEMU gone "
                  f"{t['exit']:.1f} s after the trigger")
            return 0
        vm._qmp.close()
        return 0
    except VMError as e:
        print(f"testvm: {e}", file=sys.stderr)
        return 2


def _attach(vm_dir: Path, qmp: bool = True) -> TestVM:
    """A TestVM handle on a guest booted by another process (`testvm.py boot`, or
    a test that wrote vm.json with ``write_vm_json()``); connected to ctl.sock
    unless ``qmp`` is off (guest commands need only the share)."""
    try:
        info = json.loads((vm_dir / "vm.json").read_text())
    except (OSError, ValueError):
        raise VMError(f"{vm_dir}: no VM booted there (testvm.py boot KERNEL_DIR --workdir {vm_dir})")
    vm = TestVM.__new__(TestVM)
    vm.dir, vm.share, vm.proc, vm.qemu_pid = vm_dir, vm_dir / "share", None, info["pid"]
    vm.kernel_dir = Path(info.get("kernel_dir", "."))
    vm.qmp_path, vm.ctl_path = str(vm_dir / "qmp.sock"), str(vm_dir / "ctl.sock")
    vm.console = vm_dir / "console.log"
    vm.captured, vm.crash_times = [], {}
    vm._qmp = None
    if not qmp:
        return vm
    vm._qmp = QEMUMonitorProtocol(vm.ctl_path)
    try:
        vm._qmp.connect()
    except OSError as e:
        raise VMError(f"{vm_dir}: the VM is not running ({e.strerror or e})")
    return vm


if __name__ == "__main__":
    sys.exit(_cli())
