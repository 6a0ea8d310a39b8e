"""Probe choice: compile the BPF program and attach what the running kernel allows.

memory_notify() is always probed (every hotplug state change goes through
it); bpf.c reads its ``status_change_nid`` only where the kernel's own
include/linux/memory.h declares it (gone in v6.17, see
:func:`memory_notify_has_nid`); the direct probes -- init_section_page_ext (kprobe+kretprobe),
__free_page_ext, __invalidate_page_ext -- are tried on top and kept only
if every one attaches (they may be inlined, or notrace on 6.1 where
__meminit is notrace).  Each decision is recorded with its reason in a
:class:`Plan`, which the tracer prints.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

MAX_SECTIONS = 16  # sections per memory block the notifier probe looks at (x86: 2 GiB / 128 MiB)


from ..errors import PageExtError


class TraceError(PageExtError, ValueError):
    """Bad input or an environment the tracer cannot work in: one line, exit 2."""


# -- the kernel's symbols ------------------------------------------------------

def kallsyms(path: str = "/proc/kallsyms") -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3:  # vmlinux symbols only, no [module]
                    out.setdefault(parts[2], int(parts[0], 16))
    except OSError as e:
        raise TraceError(f"cannot read {path}: {e.strerror}") from None
    return out


def traceable(path: str = "/sys/kernel/debug/tracing/available_filter_functions") -> Optional[set[str]]:
    """Functions ftrace may patch (None: tracefs not readable)."""
    for p in (path, "/sys/kernel/tracing/available_filter_functions"):
        try:
            with open(p) as f:
                return {line.split()[0] for line in f if line.strip()}
        except OSError:
            continue
    return None


def broken_kprobe_trampoline(paths: tuple[str, ...] = ("/sys/kernel/tracing/enabled_functions",
                                                       "/sys/kernel/debug/tracing/enabled_functions")
                             ) -> Optional[str]:
    """The first function whose kprobe runs through an ftrace trampoline that
    calls nothing, from tracefs ``enabled_functions``; None if every one is
    sound (or tracefs is not readable).

    An ftrace-based kprobe sends its function's fentry call to the dynamic
    trampoline of kprobe_ftrace_ops (arch/x86/kernel/ftrace.c
    create_trampoline()), which calls kprobe_ftrace_handler.  The file prints
    each such site as ``tramp: ADDR (kprobe_ftrace_handler+...)`` followed by
    `` ->TARGET``, the target decoded from the trampoline's call slot
    (add_trampoline_func(), addr_from_call()); a slot that holds no call
    prints no target, and the kernel warns "ftrace: Expected E8, got ..".
    On Debian's 7.2.13 a kprobe armed, disarmed and armed again (by us, bcc,
    perf or tracefs kprobe_events alike) leaves the slot a jmp (e9), and the
    next call of the function jumps to 0x2: "BUG: kernel NULL pointer
    dereference, address: 0000000000000002", an oops in the target.  7.3.4
    re-creates the trampoline soundly (the repository's repro-72-kprobe-oops.py).

    :param paths: enabled_functions files to try, in order
    :return: the function's name; None when every trampoline is sound; ""
        when no file could be read (nothing checked)
    """
    for p in paths:
        try:
            with open(p) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            head, sep, tramp = line.partition("tramp:")
            if sep and "(kprobe_ftrace_handler" in tramp and "->" not in tramp:
                return head.split()[0] if head.split() else "?"
        return None
    return ""


def read_kernel_u64(addr: int) -> int:
    """One word of the running kernel's memory, through /proc/kcore (drgn; no debug info needed)."""
    import drgn
    prog = drgn.Program()
    try:
        prog.set_kernel()
        return prog.read_u64(addr)
    except Exception as e:
        raise TraceError(f"cannot read kernel memory through /proc/kcore: {e}") from None


# -- probe choice ---------------------------------------------------------------

@dataclass
class Plan:
    mode: str  # direct | notifier
    attached: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def import_bcc():
    """Debian's bcc (python3-bpfcc); the venv sees it through --system-site-packages."""
    try:
        from bcc import BPF
    except ImportError:
        raise TraceError("bcc is not installed: apt-get install python3-bpfcc "
                         "(Debian's package; the PyPI package 'bcc' is unrelated)") from None
    except Exception as e:  # e.g. libbcc.so missing or broken
        raise TraceError(f"bcc is installed but cannot be loaded ({e}): reinstall python3-bpfcc") from None
    return BPF


def check_environment() -> None:
    if os.geteuid() != 0:
        raise TraceError("trace needs root (it loads BPF programs and kprobes): run it with sudo")
    import_bcc()
    if not os.path.exists("/sys/bus/event_source/devices/kprobe"):
        raise TraceError("this kernel has no perf kprobes (needs CONFIG_KPROBES and CONFIG_KPROBE_EVENTS)")
    if not os.path.exists("/sys/fs/bpf") and not os.path.exists("/proc/sys/kernel/unprivileged_bpf_disabled"):
        raise TraceError("this kernel has no BPF (needs CONFIG_BPF_SYSCALL and CONFIG_BPF_EVENTS)")


class c_stderr:
    """Capture what C libraries (libbcc, clang) write to file descriptor 2."""

    def __enter__(self):
        import tempfile
        sys.stderr.flush()
        self.tmp = tempfile.TemporaryFile()
        self.saved = os.dup(2)
        os.dup2(self.tmp.fileno(), 2)
        self.text = ""
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.tmp.seek(0)
        self.text = self.tmp.read().decode(errors="replace")
        self.tmp.close()
        return False


def attach(b, kind: str, fn: str, handler: str) -> Optional[str]:
    """Attach a kprobe or kretprobe; None on success, else bcc's reason."""
    with c_stderr() as chatter:
        try:
            (b.attach_kprobe if kind == "kprobe" else b.attach_kretprobe)(event=fn, fn_name=handler)
            return None
        except Exception as e:
            reason = str(e)
    said = chatter.text.strip().splitlines()
    return f"{reason}{': ' + said[-1] if said else ''}"


# -- the kernel's headers --------------------------------------------------------

def kernel_header(relpath: str, release: Optional[str] = None) -> Optional[str]:
    """The text of the running kernel's header ``relpath`` (e.g. "include/linux/memory.h"),
    from where bcc takes the headers it compiles bpf.c against: $BCC_KERNEL_SOURCE,
    /lib/modules/RELEASE/{source,build}, bcc's own copy of CONFIG_IKHEADERS
    (/tmp/kheaders-RELEASE), else /sys/kernel/kheaders.tar.xz itself.  None: not found."""
    release = release or os.uname().release
    dirs = [os.environ.get("BCC_KERNEL_SOURCE", ""), f"/lib/modules/{release}/source",
            f"/lib/modules/{release}/build", f"/tmp/kheaders-{release}"]
    for d in dirs:
        if d and os.path.isfile(os.path.join(d, relpath)):
            try:
                return Path(d, relpath).read_text(errors="replace")
            except OSError:
                continue
    import tarfile
    try:
        # A stream: stop at the member, do not decompress the rest.
        with tarfile.open("/sys/kernel/kheaders.tar.xz", "r|xz") as tar:
            for m in tar:
                if m.name.lstrip("./") == relpath and m.isfile():
                    f = tar.extractfile(m)
                    return f.read().decode(errors="replace") if f else None
    except (OSError, tarfile.TarError, EOFError):
        return None
    return None


def struct_members(header: str, name: str) -> Optional[set[str]]:
    """Member names of ``struct name { ... };`` in a header's text (None: not defined there)."""
    m = re.search(r"\bstruct\s+" + re.escape(name) + r"\s*\{(.*?)\n\};", header, re.S)
    if m is None:
        return None
    body = re.sub(r"/\*.*?\*/|//[^\n]*|#[^\n]*", "", m.group(1), flags=re.S)
    return set(re.findall(r"(\w+)\s*(?:\[[^\]]*\])?\s*;", body))


def memory_notify_has_nid(syms: dict[str, int]) -> tuple[bool, str]:
    """Does this kernel's ``struct memory_notify`` have ``status_change_nid``, and how we know.

    Up to v6.16 it does (include/linux/memory.h); v6.17's numa node notifier
    series (Oscar Salvador, "mm,memory_hotplug: implement numa node notifier",
    then "mm,memory_hotplug: drop status_change_nid parameter from memory_notify")
    moved the node to ``struct node_notify`` and left memory_notify with
    start_pfn and nr_pages.  Decided from the header bpf.c is compiled against;
    if it cannot be read, from kallsyms: ``node_notify()`` came with that series."""
    text = kernel_header("include/linux/memory.h")
    members = struct_members(text, "memory_notify") if text else None
    if members is not None and {"start_pfn", "nr_pages"} <= members:
        has = "status_change_nid" in members
        return has, ("struct memory_notify has status_change_nid (include/linux/memory.h)" if has else
                     "struct memory_notify has no status_change_nid (v6.17+, the node moved to"
                     " struct node_notify): node from the zone of online_pages()/offline_pages()")
    has = "node_notify" not in syms
    return has, ("include/linux/memory.h not readable: struct memory_notify layout taken from kallsyms"
                 f" ({'no ' if has else ''}node_notify(), v6.17+)")


def notifier_has_prepare_online() -> bool:
    """Does this kernel send MEM_PREPARE_ONLINE / MEM_FINISH_OFFLINE through the
    memory notifier (memory_block_online()/_offline(), around
    online_pages()/offline_pages())?  From v6.9 (c5f1e2d18909) to v6.18; v6.19
    removed them (300709fbefd1).  Decided from the header bpf.c is compiled
    against, where they are #defines (upstream) or enumerators (Debian's
    6.12.118), so bpf.c cannot #ifdef them itself; without the header, no."""
    text = kernel_header("include/linux/memory.h")
    return bool(text) and re.search(r"\bMEM_PREPARE_ONLINE\b", text) is not None \
        and re.search(r"\bMEM_FINISH_OFFLINE\b", text) is not None


def hotplug_node_args() -> dict[str, Optional[str]]:
    """How online_pages() and offline_pages() name the node, from the prototypes
    in the kernel's include/linux/memory_hotplug.h: ``"zone"`` (the third
    argument is the struct zone *), ``"nid"`` (the fourth is the int nid), or
    None (no node argument).

    5.10 (read in Debian's 5.10.262): online_pages(pfn, nr_pages, online_type,
    nid) and offline_pages(start_pfn, nr_pages).  By v5.12 online_pages() takes
    the zone, and 6.1 has online_pages()/offline_pages(pfn, nr_pages, zone,
    group).  Without the header: the zone form (every kernel since 5.12)."""
    text = kernel_header("include/linux/memory_hotplug.h")
    out: dict[str, Optional[str]] = {"online_pages": "zone", "offline_pages": "zone"}
    for fn in out:
        m = re.search(r"\b" + fn + r"\s*\(([^;{]*?)\)\s*;", text or "", re.S)
        if m is None:
            continue
        args = [a.strip() for a in m.group(1).split(",")]
        if len(args) >= 3 and "struct zone" in args[2]:
            out[fn] = "zone"
        elif len(args) >= 4 and re.search(r"\bint\s+nid$", args[3]):
            out[fn] = "nid"
        else:
            out[fn] = None
    return out


def load_bpf(syms: dict[str, int], status_change_nid: bool = True, prepare_online: bool = False):
    """Compile and load bpf.c for this kernel (``status_change_nid``: its
    struct memory_notify has that member, see :func:`memory_notify_has_nid`;
    ``prepare_online``: it has MEM_PREPARE_ONLINE, :func:`notifier_has_prepare_online`)."""
    BPF = import_bcc()
    bpf_c = (Path(__file__).parent / "bpf.c").read_text()
    text = (bpf_c.replace("__MAX_SECTIONS__", str(MAX_SECTIONS))
            .replace("MEM_SECTION_ADDR", f"{syms['mem_section']:#x}UL"))
    cflags = ["-DMEMORY_NOTIFY_HAS_STATUS_CHANGE_NID"] if status_change_nid else []
    if prepare_online:
        cflags.append("-DMEMORY_HAS_PREPARE_ONLINE")
    try:
        with c_stderr() as chatter:  # clang/libbpf messages: kept for the error line only
            return BPF(text=text, cflags=cflags)
    except Exception as e:
        detail = [line for line in chatter.text.splitlines() if "error" in line] or str(e).splitlines()
        raise TraceError(f"cannot compile or load the BPF program: {detail[0] if detail else type(e).__name__}"
                         " (needs CONFIG_BPF_SYSCALL, CONFIG_BPF_EVENTS and kernel headers:"
                         " CONFIG_IKHEADERS or /lib/modules/$(uname -r)/build)") from None


def choose_probes(b, syms: dict[str, int], ftrace: Optional[set[str]], want: str) -> Plan:
    """Attach the probes the running kernel allows; say why each was taken or not."""
    plan = Plan("notifier")
    # Always: the notifier, and the node of the online/offline in progress.
    if "memory_notify" not in syms:
        raise TraceError("no traceable probe point: memory_notify is not in /proc/kallsyms"
                         " (a kernel without CONFIG_MEMORY_HOTPLUG has no page_ext hotplug to trace)")
    problem = attach(b, "kprobe", "memory_notify", "notify_entry") or \
        attach(b, "kretprobe", "memory_notify", "notify_return")
    if problem:
        raise TraceError(f"no traceable probe point: cannot probe memory_notify ({problem})")
    broken = broken_kprobe_trampoline()
    if broken == "":
        plan.reasons.append("tracefs enabled_functions not readable: the check for a kprobe trampoline that calls"
                            " nothing (7.2.13, after any kprobe was re-armed) was not made")
    if broken:
        _detach_quietly(b, "memory_notify")
        raise TraceError(
            f"refusing to trace: this kernel's kprobe ftrace trampoline calls nothing ({broken}: no target in"
            " tracefs enabled_functions), so the next call of a probed function would oops the kernel; seen on"
            " 7.2.13 once any kprobe was disarmed and armed again since boot (7.3.4 is sound); probes detached,"
            " reboot the target to trace it")
    plan.attached.append("memory_notify (kprobe+kretprobe)")
    # online_pages()/offline_pages(pfn, nr_pages, zone, group) in 6.1: the
    # zone gives the node; 5.10's online_pages(pfn, nr_pages, online_type,
    # nid) passes it, its offline_pages(start_pfn, nr_pages) does not
    # (:func:`hotplug_node_args`).
    for fn, how in hotplug_node_args().items():
        if how is None:
            plan.reasons.append(f"{fn}: no node argument in this kernel's prototype (5.10); node from"
                                " status_change_nid only")
            continue
        handler = "hotplug_entry" if how == "zone" else "hotplug_entry_nid"
        problem = f"{fn}: not in /proc/kallsyms" if fn not in syms else \
            attach(b, "kprobe", fn, handler) or attach(b, "kretprobe", fn, "hotplug_return")
        if problem:
            plan.reasons.append(f"{fn}: {problem}; node from status_change_nid only"
                                " (none where memory_notify lacks it, v6.17+)")
        else:
            plan.attached.append(f"{fn} (node of the {'zone' if how == 'zone' else 'nid argument'})")
    if want == "notifier":
        plan.reasons.append("direct probes not tried (--probes notifier)")
        return plan

    def direct(fn: str, probes) -> Optional[str]:
        if fn not in syms:
            return f"{fn}: not in /proc/kallsyms (inlined or absent)"
        notrace = ftrace is not None and fn not in ftrace
        for kind, handler in probes:
            problem = attach(b, kind, fn, handler)
            if problem:
                _detach_quietly(b, fn)
                return (f"{fn}: {kind} refused ({problem})" + (
                    " -- it is notrace (__meminit is notrace on 6.1); that needs"
                    " CONFIG_KPROBE_EVENTS_ON_NOTRACE=y, or a kernel with 73db3abdca58 (2024),"
                    " where __meminit is plain text under MEMORY_HOTPLUG"
                    if notrace else ""))
        plan.attached.append(f"{fn} ({'+'.join(k for k, _ in probes)})")
        if notrace:
            plan.reasons.append(f"{fn}: notrace (not in available_filter_functions), but this kernel accepts"
                                " kprobes on notrace functions (CONFIG_KPROBE_EVENTS_ON_NOTRACE=y)")
        return None

    for fn, probes in (("init_section_page_ext", [("kprobe", "init_entry"), ("kretprobe", "init_return")]),
                       ("__free_page_ext", [("kprobe", "free_entry")])):
        problem = direct(fn, probes)
        if problem:
            _detach_quietly(b, "init_section_page_ext")
            if want == "direct":
                raise TraceError(f"--probes direct: {problem}")
            plan.reasons.append(problem)
            plan.reasons.append("=> fallback: init_section/free events synthesised from memory_notify"
                                " (mem_section[].page_ext of each section before and after the notifier chain)")
            return plan
    problem = direct("__invalidate_page_ext", [("kprobe", "invalidate_entry")])
    if problem:
        plan.reasons.append(problem + "; no invalidate events")
    plan.mode = "direct"
    return plan


def _detach_quietly(b, fn: str) -> None:
    for detach in (b.detach_kprobe, b.detach_kretprobe):
        try:
            detach(event=fn)
        except Exception:
            pass
