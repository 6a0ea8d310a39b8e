"""``pageext-inspect trace``: watch page_ext tables being born and freed by memory hotplug, live.

Design: one small bcc program (BPF_C below) is compiled once against the
running kernel's own headers (bcc takes them from /lib/modules/*/build or
/sys/kernel/kheaders.tar.xz), so struct mem_section, PAGES_PER_SECTION and
SPARSEMEM_EXTREME come from the kernel being traced, not from us.  It always
probes ``memory_notify()`` (traceable on every kernel, the one place every
hotplug state change goes through) and records the ``page_ext`` value of every
section of the block before and after the notifier chain ran; mem_section is
read through its /proc/kallsyms address.  On top of that it tries the *direct*
probes -- ``init_section_page_ext`` (kprobe+kretprobe), ``__free_page_ext`` and
``__invalidate_page_ext`` -- which exist only when the compiler did not inline
them and which 6.1 refuses (``__meminit`` is ``notrace`` there) unless the kernel
has CONFIG_KPROBE_EVENTS_ON_NOTRACE=y.  If the direct probes attach, their
calls are the events ("direct"); if not, the events are synthesised from the
before/after picture at memory_notify's return ("notifier": a section whose
page_ext went from NULL to a table was an init_section, from a table to NULL a
free).  Events leave the kernel through one BPF ring buffer, so they arrive in
the kernel's order; children of a notifier call are printed after it.  The
record (``--record``) is the shared event schema that the simulator replays.

Where the numbers come from: the entry size is the kernel's ``page_ext_size``
variable, read once through /proc/kcore with drgn (no debug info needed: the
address is from kallsyms); PAGES_PER_SECTION and PAGE_SIZE are compiled into
the BPF program from the kernel's headers and read back as the sizes of two
tiny BPF arrays; the node of a notifier call is ``status_change_nid`` or, when
that is NUMA_NO_NODE, the node of the zone passed to online_pages() /
offline_pages() (as online_page_ext() uses pfn_to_nid(start_pfn)); the
notifier's return is turned into an errno as notifier_to_errno() does.
Output: events on stdout (text columns, or JSON Lines with --json); the probe
choice, its reasons and "tracing: ready" (once every probe is attached) on
stderr; the summary on stdout (stderr with --json).  Limits of the fallback:
a GOING_ONLINE that fails leaves no table behind, so it shows as a failed
notifier without init_section events; synthesised events carry the time of
their notifier call; invalidations are not visible; blocks of more than
MAX_SECTIONS sections are only partly seen (a warning says so).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import typer

# The notifier actions, by the index action_index() in BPF_C gives them: the
# kernel's own values differ by version (bit flags MEM_ONLINE = 1<<0 ... in
# 6.1's include/linux/memory.h, an enum MEM_ONLINE = 0 ... in 6.12's), so the
# BPF program compares with the kernel's names from its own headers.
ACTIONS = {1: "ONLINE", 2: "GOING_OFFLINE", 3: "OFFLINE", 4: "GOING_ONLINE", 5: "CANCEL_ONLINE",
           6: "CANCEL_OFFLINE"}
UNKNOWN_ACTION = 0x100  # + the kernel's raw value (e.g. MEM_PREPARE_ONLINE, c5f1e2d18909, not in 6.1)
MAX_SECTIONS = 16  # sections per memory block the notifier probe looks at (x86: 2 GiB / 128 MiB)
EV_NOTIFY_ENTRY, EV_NOTIFY_RETURN, EV_INIT, EV_FREE, EV_INVALIDATE = 1, 2, 3, 4, 5
PAGE_EXT_INVALID = 0x1  # mm/page_ext.c, v6.1+ (b1d5488a252d)

# The direct probes, in the order they are tried.  (function, what it gives)
DIRECT = [
    ("init_section_page_ext", "kprobe+kretprobe: pfn, nid -> ret"),
    ("__free_page_ext", "kprobe: pfn"),
    ("__invalidate_page_ext", "kprobe: pfn (v6.1+, b1d5488a252d)"),
]

BPF_C = r"""
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>
#include <linux/mmzone.h>
#include <linux/memory.h>

#define MAX_SECTIONS __MAX_SECTIONS__
enum { EV_NOTIFY_ENTRY = 1, EV_NOTIFY_RETURN, EV_INIT, EV_FREE, EV_INVALIDATE };  /* as in trace.py */

/* Compile-time constants of the traced kernel, read back by user space as
 * the max_entries of these (tiny) arrays. */
BPF_ARRAY(const_section_pages, u8, PAGES_PER_SECTION);
BPF_ARRAY(const_page_size, u8, PAGE_SIZE);

struct event_t {
    u64 ts;
    u32 pid, cpu;
    char comm[TASK_COMM_LEN];
    u32 type;
    s32 nid;              /* resolved node (see nid_of_tid) */
    s64 ret;
    u64 action;           /* notifier action */
    u64 pfn;              /* start pfn */
    u64 nr_pages;
    s32 status_change_nid;
    u32 nr_sections;      /* valid entries in before[]/after[] */
    u64 before[MAX_SECTIONS];   /* mem_section[].page_ext at entry */
    u64 after[MAX_SECTIONS];    /* ... and at return */
};

struct notify_args_t {
    u64 ts, action, pfn, nr_pages;
    s32 status_change_nid, nid;
    u64 before[MAX_SECTIONS];
};

struct init_args_t {
    u64 pfn, before;
    s32 nid;
};

BPF_RINGBUF_OUTPUT(events, 64);
BPF_HASH(notify_args, u32, struct notify_args_t);
BPF_HASH(init_args, u32, struct init_args_t);
BPF_HASH(nid_of_tid, u32, s32);   /* zone node of the online/offline_pages() in progress */
BPF_PERCPU_ARRAY(scratch, struct notify_args_t, 1);

/* The notifier action as trace.py's ACTIONS index (values differ by version). */
static u64 action_index(u64 a)
{
    if (a == MEM_ONLINE) return 1;
    if (a == MEM_GOING_OFFLINE) return 2;
    if (a == MEM_OFFLINE) return 3;
    if (a == MEM_GOING_ONLINE) return 4;
    if (a == MEM_CANCEL_ONLINE) return 5;
    if (a == MEM_CANCEL_OFFLINE) return 6;
    return 0x100 + a;
}

/* mem_section[nr].page_ext, through the kallsyms address of mem_section. */
static u64 section_page_ext(u64 nr)
{
    struct mem_section *root = NULL;
    u64 val = 0;
#ifdef CONFIG_SPARSEMEM_EXTREME
    struct mem_section **roots = NULL;   /* mem_section is a pointer to the roots */
    bpf_probe_read_kernel(&roots, sizeof(roots), (void *)MEM_SECTION_ADDR);
    if (!roots)
        return 0;
    bpf_probe_read_kernel(&root, sizeof(root), &roots[SECTION_NR_TO_ROOT(nr)]);
#else
    root = (struct mem_section *)MEM_SECTION_ADDR + SECTION_NR_TO_ROOT(nr) * SECTIONS_PER_ROOT;
#endif
    if (!root)
        return 0;
    bpf_probe_read_kernel(&val, sizeof(val), &root[nr & SECTION_ROOT_MASK].page_ext);
    return val;
}

static void fill(struct event_t *e, u32 type)
{
    u64 id = bpf_get_current_pid_tgid();
    e->ts = bpf_ktime_get_ns();
    e->pid = id >> 32;
    e->cpu = bpf_get_smp_processor_id();
    e->type = type;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    u32 tid = id;
    s32 *nid = nid_of_tid.lookup(&tid);
    e->nid = nid ? *nid : -1;
}

/* online_pages()/offline_pages(pfn, nr_pages, zone, group): the node whose
 * tables are made or freed when status_change_nid is NUMA_NO_NODE. */
int hotplug_entry(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct zone *zone = (struct zone *)PT_REGS_PARM3(ctx);
    s32 nid = -1;
    bpf_probe_read_kernel(&nid, sizeof(nid), &zone->node);
    nid_of_tid.update(&tid, &nid);
    return 0;
}

int hotplug_return(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    nid_of_tid.delete(&tid);
    return 0;
}

int notify_entry(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid(), zero = 0;
    struct notify_args_t *a = scratch.lookup(&zero);
    struct memory_notify *mn = (struct memory_notify *)PT_REGS_PARM2(ctx);
    if (!a)
        return 0;
    a->ts = bpf_ktime_get_ns();
    a->action = action_index(PT_REGS_PARM1(ctx));
    bpf_probe_read_kernel(&a->pfn, sizeof(a->pfn), &mn->start_pfn);
    bpf_probe_read_kernel(&a->nr_pages, sizeof(a->nr_pages), &mn->nr_pages);
    bpf_probe_read_kernel(&a->status_change_nid, sizeof(s32), &mn->status_change_nid);
    s32 *nid = nid_of_tid.lookup(&tid);
    a->nid = a->status_change_nid >= 0 ? a->status_change_nid : (nid ? *nid : -1);
    for (int i = 0; i < MAX_SECTIONS; i++)
        a->before[i] = (u64)i * PAGES_PER_SECTION < a->nr_pages ?
                       section_page_ext(pfn_to_section_nr(a->pfn) + i) : 0;
    notify_args.update(&tid, a);

    struct event_t *e = events.ringbuf_reserve(sizeof(*e));
    if (!e)
        return 0;
    fill(e, EV_NOTIFY_ENTRY);
    e->action = a->action;
    e->pfn = a->pfn;
    events.ringbuf_submit(e, 0);
    return 0;
}

int notify_return(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct notify_args_t *a = notify_args.lookup(&tid);
    if (!a)
        return 0;
    struct event_t *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        notify_args.delete(&tid);
        return 0;
    }
    fill(e, EV_NOTIFY_RETURN);
    e->ts = a->ts;        /* the call's time: it comes before its children */
    e->ret = (s32)PT_REGS_RC(ctx);
    e->action = a->action;
    e->pfn = a->pfn;
    e->nr_pages = a->nr_pages;
    e->status_change_nid = a->status_change_nid;
    e->nid = a->nid;
    e->nr_sections = 0;
    for (int i = 0; i < MAX_SECTIONS; i++) {
        e->before[i] = a->before[i];
        e->after[i] = 0;
        if ((u64)i * PAGES_PER_SECTION < a->nr_pages) {
            e->after[i] = section_page_ext(pfn_to_section_nr(a->pfn) + i);
            e->nr_sections = i + 1;
        }
    }
    events.ringbuf_submit(e, 0);
    notify_args.delete(&tid);
    return 0;
}

/* static int init_section_page_ext(unsigned long pfn, int nid) */
int init_entry(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct init_args_t a = {};
    a.pfn = PT_REGS_PARM1(ctx);
    a.nid = PT_REGS_PARM2(ctx);
    a.before = section_page_ext(pfn_to_section_nr(a.pfn));
    init_args.update(&tid, &a);
    return 0;
}

int init_return(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct init_args_t *a = init_args.lookup(&tid);
    if (!a)
        return 0;
    struct event_t *e = events.ringbuf_reserve(sizeof(*e));
    if (e) {
        fill(e, EV_INIT);
        e->ret = (s32)PT_REGS_RC(ctx);
        e->pfn = a->pfn;
        e->nid = a->nid;
        e->nr_sections = 1;
        e->before[0] = a->before;
        e->after[0] = section_page_ext(pfn_to_section_nr(a->pfn));
        events.ringbuf_submit(e, 0);
    }
    init_args.delete(&tid);
    return 0;
}

/* static void __free_page_ext(unsigned long pfn) and __invalidate_page_ext(pfn) */
static int pfn_event(struct pt_regs *ctx, u32 type)
{
    struct event_t *e = events.ringbuf_reserve(sizeof(*e));
    if (!e)
        return 0;
    fill(e, type);
    e->pfn = PT_REGS_PARM1(ctx);
    e->nr_sections = 1;
    e->before[0] = section_page_ext(pfn_to_section_nr(e->pfn));
    events.ringbuf_submit(e, 0);
    return 0;
}

int free_entry(struct pt_regs *ctx) { return pfn_event(ctx, EV_FREE); }
int invalidate_entry(struct pt_regs *ctx) { return pfn_event(ctx, EV_INVALIDATE); }
"""


class TraceError(Exception):
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


def load_bpf(syms: dict[str, int]):
    BPF = import_bcc()
    text = (BPF_C.replace("__MAX_SECTIONS__", str(MAX_SECTIONS))
            .replace("MEM_SECTION_ADDR", f"{syms['mem_section']:#x}UL"))
    try:
        with c_stderr() as chatter:  # clang/libbpf messages: kept for the error line only
            return BPF(text=text)
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
    plan.attached.append("memory_notify (kprobe+kretprobe)")
    # online_pages()/offline_pages(pfn, nr_pages, zone, group) since v5.12
    # (as in 6.1's mm/memory_hotplug.c); the zone gives the node.
    for fn in ("online_pages", "offline_pages"):
        problem = f"{fn}: not in /proc/kallsyms" if fn not in syms else \
            attach(b, "kprobe", fn, "hotplug_entry") or attach(b, "kretprobe", fn, "hotplug_return")
        if problem:
            plan.reasons.append(f"{fn}: {problem}; node from status_change_nid only")
        else:
            plan.attached.append(f"{fn} (node of the zone)")
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


# -- events -------------------------------------------------------------------

@dataclass
class Ctx:
    mode: str
    entry_size: int
    section_pages: int
    page_size: int
    t0: int = 0


def errno_of_notifier(ret: int) -> int:
    """include/linux/notifier.h notifier_to_errno()."""
    NOTIFY_STOP_MASK, NOTIFY_OK = 0x8000, 1
    if ret & NOTIFY_STOP_MASK:
        ret &= ~NOTIFY_STOP_MASK
        return NOTIFY_OK - ret if ret > NOTIFY_OK else 0
    return 0


class Tracer:
    """Turns raw BPF events into schema events, in kernel order; prints, records, counts."""

    def __init__(self, ctx: Ctx, as_json: bool, record, count: Optional[int]):
        self.ctx = ctx
        self.as_json = as_json
        self.record = record
        self.count = count
        self.emitted = 0
        self.open: dict[int, list] = {}  # pid -> [notifier event dict, children...]
        self.kinds: dict[str, int] = {}
        self.gained: dict[int, int] = {}
        self.lost: dict[int, int] = {}
        self.net_bytes = 0
        self.section_nid: dict[int, int] = {}
        self.failures = 0
        self.latency_ns: list[int] = []  # ring buffer delivery: now - event time (both CLOCK_MONOTONIC)

    @property
    def table_bytes(self) -> int:
        return self.ctx.entry_size * self.ctx.section_pages

    def done(self) -> bool:
        return self.count is not None and self.emitted >= self.count

    def handle(self, raw) -> None:
        self.latency_ns.append(time.monotonic_ns() - raw.ts)
        base = {"time_ns": raw.ts, "cpu": raw.cpu, "comm": raw.comm.decode(errors="replace"), "pid": raw.pid}
        sp = self.ctx.section_pages
        if raw.type == EV_NOTIFY_ENTRY:
            self.open[raw.pid] = []
            return
        if raw.type == EV_NOTIFY_RETURN:
            action = ACTIONS.get(raw.action, f"action {raw.action - UNKNOWN_ACTION}")
            ev = {"event": "notifier", "action": action, "start_pfn": raw.pfn, "nr_pages": raw.nr_pages,
                  "nid": raw.nid, "ret": errno_of_notifier(raw.ret & 0xffffffff), **base}
            children = self.open.pop(raw.pid, [])
            if self.ctx.mode == "notifier":
                children = self.synthesise(raw, ev, base)
            self.emit(ev, {"raw_ret": raw.ret})
            for child, extra in children:
                self.emit(child, extra)
            return
        pfn = raw.pfn
        if raw.type == EV_INIT:
            allocated = raw.before[0] == 0 and raw.after[0] != 0
            ev = {"event": "init_section", "pfn": pfn, "nid": raw.nid, "ret": raw.ret, **base}
            extra = {"bytes": self.table_bytes if allocated else 0}
        elif raw.type == EV_FREE:
            ev = {"event": "free", "pfn": pfn, **base}
            extra = {"bytes": -self.table_bytes if raw.before[0] else 0,
                     "nid": self.section_nid.get(pfn // sp, raw.nid)}
        elif raw.type == EV_INVALIDATE:
            ev = {"event": "invalidate", "pfn": pfn, **base}
            extra = {"bytes": 0, "nid": self.section_nid.get(pfn // sp, raw.nid)}
        else:
            return
        if raw.pid in self.open:
            self.open[raw.pid].append((ev, extra))
        else:
            self.emit(ev, extra)

    def flush_open(self) -> None:
        for pid in list(self.open):
            for child, extra in self.open.pop(pid):
                self.emit(child, extra)

    def synthesise(self, raw, notifier: dict, base: dict) -> list:
        """Fallback: the init_section/free calls implied by the page_ext change of each section."""
        out = []
        first = raw.pfn // self.ctx.section_pages
        for i in range(raw.nr_sections):
            before, after = raw.before[i], raw.after[i]
            pfn = (first + i) * self.ctx.section_pages
            if not before and after:
                out.append(({"event": "init_section", "pfn": pfn, "nid": raw.nid, "ret": 0, **base},
                            {"bytes": self.table_bytes}))
            elif before and not after:
                out.append(({"event": "free", "pfn": pfn, **base},
                            {"bytes": -self.table_bytes, "nid": self.section_nid.get(first + i, raw.nid)}))
        if raw.nr_pages > raw.nr_sections * self.ctx.section_pages:
            sys.stderr.write(f"tracing: warning: block at pfn {raw.pfn:#x} has more than {MAX_SECTIONS}"
                             " sections; only the first ones are seen\n")
        return out

    def emit(self, ev: dict, extra: dict) -> None:
        if self.done():
            return
        self.emitted += 1
        kind = ev["event"] if ev["event"] != "notifier" else ev["action"]
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        sp = self.ctx.section_pages
        if ev["event"] == "init_section" and extra["bytes"]:
            self.section_nid[ev["pfn"] // sp] = ev["nid"]
            self.gained[ev["nid"]] = self.gained.get(ev["nid"], 0) + 1
        if ev["event"] == "free" and extra["bytes"]:
            nid = extra["nid"]
            self.lost[nid] = self.lost.get(nid, 0) + 1
        self.net_bytes += extra.get("bytes", 0)
        if ev.get("ret"):
            self.failures += 1
        if self.record is not None:
            self.record.write(json.dumps(ev) + "\n")
            self.record.flush()
        if self.as_json:
            sys.stdout.write(json.dumps(ev) + "\n")
        else:
            sys.stdout.write(self.line(ev, extra) + "\n")
        sys.stdout.flush()

    def line(self, ev: dict, extra: dict) -> str:
        sp = self.ctx.section_pages
        if not self.ctx.t0:
            self.ctx.t0 = ev["time_ns"]
        t = (ev["time_ns"] - self.ctx.t0) / 1e9
        who = f"{ev['comm']}/{ev['pid']}"
        mark = ""
        if ev["event"] == "notifier":
            name = ev["action"]
            start, n = ev["start_pfn"], ev["nr_pages"]
            nid = ev["nid"]
            nbytes = "-"
            if ev["ret"]:
                mark = "FAILED"
            elif name.startswith("CANCEL"):
                mark = "rollback"
        else:
            name = ev["event"]
            start, n = ev["pfn"], sp
            nid = ev.get("nid", extra.get("nid", -1))
            nbytes = f"{extra['bytes']:+d}" if extra.get("bytes") else "0"
            if ev.get("ret"):
                mark = "FAILED"
            elif ev["event"] != "invalidate" and not extra.get("bytes"):
                mark = "(no table change)"
        ret = "-" if ev.get("ret") is None else str(ev["ret"])
        first, last = start // sp, (start + max(n, 1) - 1) // sp
        secs = str(first) if first == last else f"{first}-{last}"
        return (f"{t:12.6f} {ev['cpu']:3d} {who[:20]:<20} {name:<14} "
                f"{start:#010x}-{start + n - 1:#010x} {secs:>9} {nid:>3} {nbytes:>10} {ret:>4} {mark}").rstrip()

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.kinds.items())) or "none"
        nodes = sorted(set(self.gained) | set(self.lost))
        per_node = "; ".join(f"node {n}: +{self.gained.get(n, 0)} -{self.lost.get(n, 0)}" for n in nodes) or "none"
        return (f"summary: {self.emitted} events ({kinds})\n"
                f"summary: sections gained/lost per node: {per_node}\n"
                f"summary: net page_ext bytes {self.net_bytes:+d} ({self.table_bytes} per section table)"
                + (f"\nsummary: {self.failures} failed calls" if self.failures else "")
                + (f"\nsummary: delivery latency (kernel event -> tracer) mean"
                   f" {sum(self.latency_ns) / len(self.latency_ns) / 1e6:.1f} ms,"
                   f" max {max(self.latency_ns) / 1e6:.1f} ms over {len(self.latency_ns)} raw events"
                   if self.latency_ns else ""))


HEADER_LINE = f"{'TIME(s)':>12} {'CPU':>3} {'COMM/PID':<20} {'EVENT':<14} {'PFN RANGE':<21} " \
              f"{'SECTIONS':>9} {'NID':>3} {'BYTES':>10} {'RET':>4}"


def run_trace(as_json: bool, record_path: Optional[str], duration: Optional[float],
              count: Optional[int], probes: str) -> int:
    if probes not in ("auto", "direct", "notifier"):
        raise TraceError(f"--probes must be auto, direct or notifier, not {probes!r}")
    check_environment()
    syms = kallsyms()
    if syms and not any(syms.values()):
        raise TraceError("/proc/kallsyms shows no addresses (kernel.kptr_restrict): run as root"
                         " or set sysctl kernel.kptr_restrict=0")
    if "mem_section" not in syms:
        raise TraceError("mem_section is not in /proc/kallsyms: only SPARSEMEM kernels are supported"
                         " (needs CONFIG_KALLSYMS_ALL)")
    if "page_ext_size" in syms:
        entry_size = read_kernel_u64(syms["page_ext_size"])
    else:
        raise TraceError("page_ext_size is not in /proc/kallsyms: page_ext has no client on this kernel"
                         " (nothing will ever be allocated) or CONFIG_KALLSYMS_ALL is off")
    record = None
    if record_path:
        try:
            record = open(record_path, "w")
        except OSError as e:
            raise TraceError(f"cannot write {record_path}: {e.strerror}") from None
    t_start = time.monotonic()
    b = load_bpf(syms)
    t_loaded = time.monotonic()
    ctx = Ctx("notifier", entry_size, b["const_section_pages"].max_entries, b["const_page_size"].max_entries)
    plan = choose_probes(b, syms, traceable(), probes)
    ctx.mode = plan.mode
    t_ready = time.monotonic()
    err = sys.stderr
    err.write(f"tracing: probes: {plan.mode} -- attached: {', '.join(plan.attached)}\n")
    for r in plan.reasons:
        err.write(f"tracing: {r}\n")
    err.write(f"tracing: entry_size {entry_size} (page_ext_size), {ctx.section_pages} pages per section,"
              f" {ctx.entry_size * ctx.section_pages} bytes per table; compile+load {t_loaded - t_start:.1f} s,"
              f" attach {t_ready - t_loaded:.1f} s\n")
    if record is not None:
        header = {"kind": "pageext-trace", "version": 1, "release": os.uname().release, "probes": plan.mode,
                  "entry_size": entry_size, "section_pages": ctx.section_pages, "page_size": ctx.page_size}
        record.write(json.dumps(header) + "\n")
        record.flush()
    tracer = Tracer(ctx, as_json, record, count)

    stop = {"why": None}

    def on_signal(signum, frame):
        stop["why"] = signal.Signals(signum).name

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def callback(_cpu, data, _size):
        tracer.handle(b["events"].event(data))

    b["events"].open_ring_buffer(callback)
    if not as_json:
        sys.stdout.write(HEADER_LINE + "\n")
        sys.stdout.flush()
    err.write("tracing: ready\n")
    err.flush()
    deadline = None if duration is None else time.monotonic() + duration
    while stop["why"] is None and not tracer.done():
        if deadline is not None and time.monotonic() >= deadline:
            stop["why"] = "duration"
            break
        b.ring_buffer_poll(200)
    b.ring_buffer_consume()
    tracer.flush_open()  # stopped inside a notifier call: its children so far
    if record is not None:
        record.close()
    out = sys.stderr if as_json else sys.stdout
    out.write(tracer.summary() + f"\nsummary: stopped by {stop['why'] or 'count'}\n")
    out.flush()
    b.cleanup()
    return 0


def register(app: typer.Typer, names: set[str]) -> None:
    @app.command("trace", help="Trace page_ext table allocations and frees caused by memory hotplug, live "
                               "(root, bcc). Prints 'tracing: ready' on stderr once the probes are attached."
                               "\n\n\b\nExamples:\n"
                               "  pageext-inspect trace                         # until Ctrl-C, then a summary\n"
                               "  pageext-inspect trace --record t.jsonl        # for validate --trace t.jsonl\n"
                               "  pageext-inspect trace --json --duration 60    # JSON Lines for a minute\n"
                               "  pageext-inspect trace --probes notifier       # force the memory_notify fallback\n"
                               "  scripts/tracevm.py KERNEL_DIR --demo          # in a test VM, with hotplug")
    def trace_cmd(
        as_json: bool = typer.Option(False, "--json", help="JSON Lines on stdout (summary on stderr)"),
        record: Optional[str] = typer.Option(None, "--record", help="write the trace file (header + events)"),
        duration: Optional[float] = typer.Option(None, "--duration", help="stop after S seconds"),
        count: Optional[int] = typer.Option(None, "--count", help="stop after N events"),
        probes: str = typer.Option("auto", "--probes", help="auto | direct | notifier"),
    ) -> None:
        from .cli import fail
        try:
            code = run_trace(as_json, record, duration, count, probes)
        except TraceError as e:
            raise fail(str(e))
        raise typer.Exit(code)

    names.add("trace")
