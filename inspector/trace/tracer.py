"""The tracer: raw BPF events to the shared event schema, in kernel order.

Events leave the kernel through one BPF ring buffer, so they arrive in the
kernel's order; a notifier call's children (init_section, free, invalidate
on the same pid) are held until the call returns and printed after it.
In the fallback mode (``notifier``), the children are synthesised from each
section's page_ext pointer before and after the notifier chain.  Every
event goes to stdout (fixed columns, or JSON Lines) and, with ``--record``,
to the trace record that ``validate --trace`` replays
(:func:`inspector.events.read_trace`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Optional

from ..events import ACTIONS as EVENT_ACTIONS, BLOCK_ACTIONS, TRACE_HEADER, header, trace_line
from ..jsonout import dumps_line
from .probes import MAX_SECTIONS, TraceError, check_environment, choose_probes, kallsyms, load_bpf, \
    memory_notify_has_nid, notifier_has_prepare_online, read_kernel_u64, traceable

# The notifier actions, by the index action_index() in bpf.c gives them: the
# kernel's own values differ by version (bit flags MEM_ONLINE = 1<<0 ... in
# 6.1's include/linux/memory.h, an enum MEM_ONLINE = 0 ... in 6.12's), so the
# BPF program compares with the kernel's names from its own headers.
ACTIONS = dict(enumerate(EVENT_ACTIONS, 1))
UNKNOWN_ACTION = 0x100  # + the kernel's raw value of an action not in events.ACTIONS ("action N")
EV_NOTIFY_ENTRY, EV_NOTIFY_RETURN, EV_INIT, EV_FREE, EV_INVALIDATE = 1, 2, 3, 4, 5  # as in bpf.c


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
            # BLOCK_ACTIONS: the kernel leaves status_change_nid unset; the node is the block's.
            nid = raw.nid if raw.nid >= 0 and action not in BLOCK_ACTIONS else self.node_of(raw.pfn)
            ev = {"event": "notifier", "action": action, "start_pfn": raw.pfn, "nr_pages": raw.nr_pages,
                  "nid": nid, "ret": errno_of_notifier(raw.ret & 0xffffffff), **base}
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

    def node_of(self, pfn: int) -> int:
        """The node of the block at ``pfn`` where no probe gave it (5.10's
        offline_pages(start_pfn, nr_pages) takes no node, probes.hotplug_node_args):
        the node its table was made on if this trace saw it, else the kernel's
        own /sys/devices/system/memory/memoryN/nodeM link (the block is still
        there while it goes offline); -1 if neither says."""
        nid = self.section_nid.get(pfn // self.ctx.section_pages)
        if nid is not None:
            return nid
        try:
            with open("/sys/devices/system/memory/block_size_bytes") as f:
                block = pfn * self.ctx.page_size // int(f.read(), 16)
            for name in os.listdir(f"/sys/devices/system/memory/memory{block}"):
                if name.startswith("node") and name[4:].isdigit():
                    return int(name[4:])
        except (OSError, ValueError):
            pass
        return -1

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
            sys.stdout.write(dumps_line(ev) + "\n")  # a command's JSON (inspector/jsonout.py)
        else:
            sys.stdout.write(self.line(ev, extra) + "\n")
        sys.stdout.flush()

    def line(self, ev: dict, extra: dict) -> str:
        if not self.ctx.t0:
            self.ctx.t0 = ev["time_ns"]
        return trace_line(ev, extra, self.ctx.section_pages, self.ctx.t0)

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


# The machines the tracer has been validated on: tests/test_vm_trace.py runs it
# in x86_64 guests (the host's Python, drgn and bcc through its shared root).
# Not arm64: its test guests have no userspace with bcc and the arm64 test
# kernel no kprobes or BPF (README.md, "arm64 guests, 4K and 64K pages").
VALIDATED_MACHINES = ("x86_64",)


def check_machine(machine: str) -> None:
    """Refuse, in one line, a machine (``uname -m``) the tracer has not been validated on."""
    if machine not in VALIDATED_MACHINES:
        raise TraceError(f"trace has been validated on {', '.join(VALIDATED_MACHINES)} only, not on {machine}: "
                         "README.md ('arm64 guests, 4K and 64K pages') says what an arm64 trace still needs")


def run_trace(as_json: bool, record_path: Optional[str], duration: Optional[float],
              count: Optional[int], probes: str) -> int:
    if probes not in ("auto", "direct", "notifier"):
        raise TraceError(f"--probes must be auto, direct or notifier, not {probes!r}")
    check_machine(os.uname().machine)
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
    has_nid, layout = memory_notify_has_nid(syms)
    b = load_bpf(syms, has_nid, notifier_has_prepare_online())
    t_loaded = time.monotonic()
    ctx = Ctx("notifier", entry_size, b["const_section_pages"].max_entries, b["const_page_size"].max_entries)
    plan = choose_probes(b, syms, traceable(), probes)
    ctx.mode = plan.mode
    t_ready = time.monotonic()
    err = sys.stderr
    err.write(f"tracing: probes: {plan.mode} -- attached: {', '.join(plan.attached)}\n")
    for r in [layout, *plan.reasons]:
        err.write(f"tracing: {r}\n")
    err.write(f"tracing: entry_size {entry_size} (page_ext_size), {ctx.section_pages} pages per section,"
              f" {ctx.entry_size * ctx.section_pages} bytes per table; compile+load {t_loaded - t_start:.1f} s,"
              f" attach {t_ready - t_loaded:.1f} s\n")
    if record is not None:
        record.write(json.dumps(header(os.uname().release, plan.mode, entry_size, ctx.section_pages,
                                       ctx.page_size)) + "\n")
        record.flush()
    tracer = Tracer(ctx, as_json, record, count)

    stop = {"why": None}

    def on_signal(signum, frame):
        stop["why"] = signal.Signals(signum).name

    # Ours only while tracing: a caller (a drgn session, a script, pytest)
    # gets its own handlers back on every way out.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _trace_loop(b, tracer, record, as_json, duration, stop, err)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _trace_loop(b, tracer, record, as_json: bool, duration, stop: dict, err) -> int:
    """Poll the ring buffer until a signal, the duration or the count stops it; print the summary."""

    def callback(_cpu, data, _size):
        tracer.handle(b["events"].event(data))

    b["events"].open_ring_buffer(callback)
    if not as_json:
        sys.stdout.write(TRACE_HEADER + "\n")
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
    quiesce(b)
    b.cleanup()
    return 0


def quiesce(b, limit: float = 5.0) -> None:
    """Detach only once no online_pages()/offline_pages() or memory_notify()
    call is inside our probes (their kretprobes hold it in nid_of_tid and
    notify_args), at most ``limit`` seconds.  --count stops inside the hotplug
    call that made its last event, and removing the probes of a call in flight
    crashed a 7.2.13 guest: the same online_pages() jumped to 0x2 right after
    (test_count_and_duration_stop_the_tracer)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            if not len(b["nid_of_tid"]) and not len(b["notify_args"]):
                return
        except Exception:  # a map we cannot read: nothing to wait for
            return
        time.sleep(0.05)
