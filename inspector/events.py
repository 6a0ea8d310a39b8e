"""The hotplug event format: one schema, shared by the tracer, the simulator and ``validate``.

Memory hotplug drives mm/page_ext.c through the memory notifier; every
party that talks about what happened uses these events:

* ``notifier`` -- a memory_notify() call: ``action`` (GOING_ONLINE, ONLINE,
  CANCEL_ONLINE, GOING_OFFLINE, OFFLINE, CANCEL_OFFLINE; PREPARE_ONLINE and
  FINISH_OFFLINE on v6.9 to v6.18, :data:`BLOCK_ACTIONS`), ``start_pfn``,
  ``nr_pages``, ``nid``, ``ret`` (0 or a negative errno; None while a
  reader holds RCU in a simulated offline);
* ``init_section`` -- init_section_page_ext(``pfn``, ``nid``) = ``ret``;
* ``free`` -- __free_page_ext(``pfn``);
* ``invalidate`` -- __invalidate_page_ext(``pfn``) (v6.1+, b1d5488a252d);
* ``alloc_node`` / ``panic`` -- FLATMEM boot, simulator only.

The bcc tracer records them (with ``time_ns``, ``cpu``, ``comm``, ``pid``
besides) after a header line; the simulator emits them; ``validate --trace``
reads a record back with :func:`read_trace` and compares
:func:`schema_view` of each side.  :func:`describe` renders one event as a
call (the simulator's log); :func:`trace_line` as the tracer's fixed columns.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from .errors import PageExtError

TRACE_KIND = "pageext-trace"
TRACE_VERSION = 1

# The fields every event of a kind carries, in the schema.
SCHEMA_KEYS = {"notifier": ("event", "action", "start_pfn", "nr_pages", "nid", "ret"),
               "init_section": ("event", "pfn", "nid", "ret"),
               "free": ("event", "pfn"), "invalidate": ("event", "pfn")}

# Notifier actions by name (the kernel's values differ by version: bit flags
# MEM_ONLINE = 1 << 0 ... in 6.1's include/linux/memory.h, an enum from 6.19
# and in Debian's 6.12.118).  bpf.c's action_index() numbers them in this order, from 1.
ACTIONS = ("ONLINE", "GOING_OFFLINE", "OFFLINE", "GOING_ONLINE", "CANCEL_ONLINE", "CANCEL_OFFLINE",
           "PREPARE_ONLINE", "FINISH_OFFLINE")
# The two actions memory_block_online()/_offline() send around
# online_pages()/offline_pages(), v6.9 (c5f1e2d18909) to v6.18 (removed by
# 300709fbefd1); page_ext's callback does nothing on them, the simulator does
# not model them, and the kernel leaves their status_change_nid unset.
BLOCK_ACTIONS = ("PREPARE_ONLINE", "FINISH_OFFLINE")


class TraceFileError(PageExtError, ValueError):
    """A trace record that cannot be read (one line for the user)."""


def schema_view(ev: dict[str, Any]) -> dict[str, Any]:
    """The schema fields of an event (what two sides of a comparison must share)."""
    return {k: ev[k] for k in SCHEMA_KEYS[ev["event"]]}


def header(release: str, probes: str, entry_size: int, section_pages: int, page_size: int) -> dict[str, Any]:
    return {"kind": TRACE_KIND, "version": TRACE_VERSION, "release": release, "probes": probes,
            "entry_size": entry_size, "section_pages": section_pages, "page_size": page_size}


def read_trace(path: str, max_bytes: int = 256 << 20) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, events) of a trace record; TraceFileError on anything else."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise TraceFileError(f"{path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise TraceFileError(f"{path}: not a regular file (a trace record is a file written by "
                             "'pageext-inspect trace --record')")
    if st.st_size > max_bytes:
        raise TraceFileError(f"{path}: {st.st_size} bytes is more than a trace record holds")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f.read().splitlines() if ln.strip()]
    except OSError as e:
        raise TraceFileError(f"{path}: {e.strerror}") from None
    try:
        docs = [json.loads(ln) for ln in lines]
    except json.JSONDecodeError as e:
        raise TraceFileError(f"{path}: not JSON Lines ({e.msg} at line {e.lineno})") from None
    if not docs or not isinstance(docs[0], dict) or docs[0].get("kind") != TRACE_KIND:
        raise TraceFileError(f"{path}: not a pageext trace (first line must be the {TRACE_KIND} header)")
    head, events = docs[0], docs[1:]
    if head.get("version") != TRACE_VERSION:
        raise TraceFileError(f"{path}: trace version {head.get('version')!r} is not supported "
                             f"({TRACE_VERSION} is)")
    for i, ev in enumerate(events, 2):
        keys = SCHEMA_KEYS.get(ev.get("event") if isinstance(ev, dict) else None)
        if keys is None or any(k not in ev for k in keys):
            raise TraceFileError(f"{path}:{i}: not an event of the shared schema")
    return head, events


def describe(ev: dict[str, Any]) -> str:
    """One event as the call it stands for (the simulator's event log)."""
    kind = ev.get("event")
    if kind == "notifier":
        ret = "-" if ev.get("ret") is None else ev["ret"]
        return (f"notifier {ev['action']:<14} pfn {ev['start_pfn']:#x} +{ev['nr_pages']:#x} "
                f"nid {ev['nid']} ret {ret}")
    if kind == "init_section":
        return f"  init_section_page_ext(pfn {ev['pfn']:#x}, nid {ev['nid']}) = {ev['ret']}"
    if kind == "free":
        return f"  __free_page_ext(pfn {ev['pfn']:#x})"
    if kind == "invalidate":
        return f"  __invalidate_page_ext(pfn {ev['pfn']:#x})"
    if kind == "alloc_node":
        return f"alloc_node_page_ext(nid {ev['nid']}) {ev['nr_pages']} entries = {ev['ret']}"
    return json.dumps(ev)


TRACE_HEADER = f"{'TIME(s)':>12} {'CPU':>3} {'COMM/PID':<20} {'EVENT':<14} {'PFN RANGE':<21} " \
               f"{'SECTIONS':>9} {'NID':>3} {'BYTES':>10} {'RET':>4}"


def trace_line(ev: dict[str, Any], extra: dict[str, Any], section_pages: int, t0: int) -> str:
    """One event in the tracer's fixed columns (``extra``: bytes gained or lost, nid)."""
    t = (ev["time_ns"] - t0) / 1e9
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
        start, n = ev["pfn"], section_pages
        nid = ev.get("nid", extra.get("nid", -1))
        nbytes = f"{extra['bytes']:+d}" if extra.get("bytes") else "0"
        if ev.get("ret"):
            mark = "FAILED"
        elif ev["event"] != "invalidate" and not extra.get("bytes"):
            mark = "(no table change)"
    ret = "-" if ev.get("ret") is None else str(ev["ret"])
    first, last = start // section_pages, (start + max(n, 1) - 1) // section_pages
    secs = str(first) if first == last else f"{first}-{last}"
    return (f"{t:12.6f} {ev['cpu']:3d} {who[:20]:<20} {name:<14} "
            f"{start:#010x}-{start + n - 1:#010x} {secs:>9} {nid:>3} {nbytes:>10} {ret:>4} {mark}").rstrip()
