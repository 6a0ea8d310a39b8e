"""The simulator as the oracle of a real kernel (the ``validate`` command is :mod:`inspector.commands.sim`).

Design: read the target's own memory map through the core pipeline
(open_target -> discover -> walk: which sections are present, online,
early, on which node; the clients and their sizes; ``struct page_ext``'s
size), turn it into a simulator machine -- boot memory from the early
sections, every other present section hot-added and, if online, onlined one
memory block at a time -- run the variant chosen from the release, and diff
the predicted layout with the walked one: the set of tables, each table's
node, first pfn, pages, bytes and state, the entry size, the client offsets
and total_usage.  Without a history, total_usage may exceed the prediction
by whole tables freed by hot-remove (it never decreases); that is reported,
not counted as a difference.  With ``--trace FILE`` (the bcc tracer's
record) the history is known: the simulator boots from the early sections
and replays the trace's notifier calls, the trace's own events are compared
with the simulator's, and total_usage must match exactly.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from ..errors import PageExtError
from ..events import BLOCK_ACTIONS, schema_view
from ..model import Layout
from .model import SimResult, Simulator
from ..versions import Variant, get, variant_for_release
from ..walk import node_spans

TABLE_FIELDS = ("node", "start_pfn", "nr_pages", "bytes", "state")


class ValidateError(PageExtError, ValueError):
    """Bad input (exit 2)."""


def _key(t) -> Any:
    return t.section if t.section is not None else ("node", t.node)


def diff_layouts(pred: Layout, walked: Layout, fields=TABLE_FIELDS, total_exact: bool = True,
                 pred_total: Optional[int] = None) -> tuple[list[str], list[str]]:
    """(differences, notes) between a predicted and a walked layout."""
    diffs: list[str] = []
    notes: list[str] = []
    if pred.entry_size != walked.entry_size:
        diffs.append(f"entry size: predicted {pred.entry_size}, kernel {walked.entry_size}")
    pa = {c.name: c.offset for c in pred.clients if c.active}
    wa = {c.name: c.offset for c in walked.clients if c.active}
    if pa != wa:
        diffs.append(f"active clients and offsets: predicted {pa}, kernel {wa}")
    pt = {_key(t): t for t in pred.tables}
    wt = {_key(t): t for t in walked.tables}
    for k in sorted(set(pt) - set(wt), key=str):
        diffs.append(f"{_where(k)}: predicted a table, the kernel has none")
    for k in sorted(set(wt) - set(pt), key=str):
        diffs.append(f"{_where(k)}: the kernel has a table, none predicted")
    for k in sorted(set(pt) & set(wt), key=str):
        for f in fields:
            a, b = getattr(pt[k], f), getattr(wt[k], f)
            if a != b:
                diffs.append(f"{_where(k)}: {f} predicted {_fmt(a)}, kernel {_fmt(b)}")
    usage = walked.total_usage
    predicted = pred.total_usage if pred_total is None else pred_total
    if usage is None:
        notes.append(f"the kernel's total_usage is not in its debug info (optimized out): the predicted "
                     f"{predicted} bytes were not compared")
    elif predicted != usage:
        table = (pred.section_pages or 0) * pred.entry_size
        extra = usage - predicted
        if not total_exact and table and extra > 0 and extra % table == 0:
            notes.append(f"total_usage {usage} = predicted {predicted} + {extra // table} table(s) freed "
                         "since boot (total_usage never decreases; pass --trace for the history)")
        else:
            diffs.append(f"total_usage: predicted {predicted}, kernel {usage}")
    return diffs, notes


def _where(k) -> str:
    return f"node {k[1]}" if isinstance(k, tuple) else f"section {k}"


def _fmt(v) -> str:
    return f"{v:#x}" if isinstance(v, int) and v > 4096 else str(v)


def machine_from_walk(prog, walked: Layout) -> dict[str, Any]:
    """The simulator's input, read from the target's own state."""
    import drgn

    geo = walked
    struct_size = prog.type("struct page_ext").size
    # Clients in page_ext_ops[] order: the needed ones by their assigned offsets,
    # then the others (whose order does not change any offset).
    clients = [{"name": c.name, "size": c.size, "need": c.active,
                "need_shared_flags": bool(c.need_shared_flags)} for c in geo.clients]
    if walked.allocated and clients and not any(c["need"] for c in clients):
        # v3.19 ops have no offset/size, so discover() cannot tell who asked;
        # page_ext is allocated, so some need() was true, and which one does
        # not change a v3.19 entry (sizeof(struct page_ext)).
        for c in clients:
            c["need"] = True
    m: dict[str, Any] = {"memory_model": geo.memory_model, "page_size": geo.page_size,
                         "struct_page_ext_size": struct_size, "clients": clients}
    if not geo.sparse:
        try:
            spans = node_spans(prog)
        except drgn.FaultError as e:
            raise ValidateError(f"cannot read pglist_data: {e}") from None
        m["nodes"] = [{"nid": n, "start_pfn": s, "end_pfn": e} for n, s, e in spans]
        m["max_order_nr_pages"] = geo.max_order_nr_pages or 1
        return m
    m["section_pages"] = geo.section_pages
    m["block_sections"] = geo.sections_per_block
    unknown = [s.nr for s in walked.sections if s.present and s.node is None]
    if unknown:
        raise ValidateError(f"cannot tell the node of sections {unknown[:6]}")
    m["sections"] = [{"nr": s.nr, "node": s.node} for s in walked.sections if s.present and s.early]
    m["steps"] = hotplug_steps(walked)
    return m


def hotplug_steps(walked: Layout) -> list[dict[str, Any]]:
    """hot_add (and online, one block per notifier) for every present non-boot section."""
    spb = walked.sections_per_block or 1
    blocks: dict[int, list] = {}
    for s in walked.sections:
        if s.present and not s.early:
            blocks.setdefault(s.nr // spb, []).append(s)
    steps: list[dict[str, Any]] = []
    for b in sorted(blocks):
        secs = sorted(blocks[b], key=lambda s: s.nr)
        nrs = [s.nr for s in secs]
        steps.append({"op": "hot_add", "sections": nrs, "node": secs[0].node})
        if all(s.online for s in secs):
            steps.append({"op": "online", "sections": nrs})
    return steps


# -- trace replay ------------------------------------------------------------------------------

def replay(machine: dict[str, Any], variant: Variant, events: list[dict[str, Any]],
           probes: str) -> tuple[SimResult, list[str]]:
    """Boot ``machine`` (boot sections only), then the trace's notifier calls."""
    m = dict(machine, steps=[])
    sim = Simulator(m, variant)
    sim.boot()
    boot_events = len(sim.events)
    pps = sim.section_pages
    notes: list[str] = []
    i = 0
    while i < len(events):
        ev = events[i]
        children = []
        j = i + 1
        while j < len(events) and events[j]["event"] != "notifier":
            children.append(events[j])
            j += 1
        if ev["event"] == "notifier":
            first = ev["start_pfn"] // pps
            nrs = list(range(first, -(-(ev["start_pfn"] + ev["nr_pages"]) // pps)))
            if ev["action"] == "GOING_ONLINE":
                new = [n for n in nrs if n not in sim.sections or not sim.sections[n].present]
                if new:
                    sim.step({"op": "hot_add", "sections": new, "node": ev["nid"]})
                fails = [k for k, c in enumerate(children) if c["event"] == "init_section" and c["ret"]]
                if fails:
                    k = fails[0]
                    before = [c for c in children[:k] if c["event"] == "init_section"]
                    attempts = sum(1 for c in before
                                   if sim.sections.get(c["pfn"] // pps) is None
                                   or sim.sections[c["pfn"] // pps].base is None)
                    sim.fail_alloc.add(sim.alloc_attempts + attempts + 1)
                elif ev.get("ret"):
                    notes.append(f"GOING_ONLINE at pfn {ev['start_pfn']:#x} failed but the trace does not say "
                                 "which section; assumed the first")
                    sim.fail_alloc.add(sim.alloc_attempts + 1)
                sim.step({"op": "online", "sections": nrs})
            elif ev["action"] == "OFFLINE":
                sim.step({"op": "offline", "sections": nrs, "reader": ev.get("ret") is None})
        i = j
    result = SimResult(sim.events, sim.layout(), sim.total_usage, sim.dmesg, sim.panicked, dict(sim.spans))
    # The trace against the simulator's own calls after boot.
    mine = [schema_view(e) for e in sim.events[boot_events:]]
    theirs = [schema_view(e) for e in events
              if not (e["event"] == "notifier" and e["action"] in BLOCK_ACTIONS)]
    block = len(events) - len(theirs)
    if block:
        notes.append(f"{block} PREPARE_ONLINE/FINISH_OFFLINE notifier call(s) left out (v6.9 to v6.18, "
                     "c5f1e2d18909: memory_block_online()/_offline(); page_ext's callback ignores them)")
    if probes != "direct":  # the notifier-only tracer sees no individual calls
        mine = [e for e in mine if e["event"] == "notifier"]
        theirs = [e for e in theirs if e["event"] == "notifier"]
    elif variant.invalid_bit and not any(e["event"] == "invalidate" for e in theirs):
        # __invalidate_page_ext() is a small static function; when the compiler
        # inlines it (the 6.1 test kernel does) the tracer cannot probe it.
        if any(e["event"] == "invalidate" for e in mine):
            notes.append("the trace has no __invalidate_page_ext calls (not probeable on this kernel); "
                         "invalidations were not compared")
        mine = [e for e in mine if e["event"] != "invalidate"]
    diffs = []
    for k in range(max(len(mine), len(theirs))):
        a = mine[k] if k < len(mine) else None
        b = theirs[k] if k < len(theirs) else None
        if a != b:
            diffs.append(f"event {k + 1}: predicted {json.dumps(a)}, traced {json.dumps(b)}")
            break  # after the first divergence the rest only repeats it
    return result, diffs + [f"note: {n}" for n in notes]


def validate_session(pe, header: Optional[dict], events: Optional[list], variant_name: Optional[str] = None,
                     trace: str = "") -> tuple[list[str], list[str], str]:
    """(differences, notes, summary line) of a session's kernel against the simulator."""
    prog, walked = pe.prog, pe.layout
    geo = walked
    try:
        variant = get(variant_name) if variant_name else variant_for_release(geo.release)
    except ValueError as e:
        raise ValidateError(str(e)) from None
    machine = machine_from_walk(prog, walked)
    rules_notes = []
    # Only the rules this memory model can show: the FLATMEM slack on FLATMEM,
    # PAGE_EXT_INVALID on SPARSEMEM.
    relevant = [k for k in geo.rules.to_json()
                if k != ("invalid_bit" if not geo.sparse else "flatmem_max_order_slack")]
    differ = [f"{k} {getattr(geo.rules, k)!r} (variant {getattr(variant, k)!r})"
              for k in relevant if getattr(geo.rules, k) != getattr(variant, k)]
    if differ:
        rules_notes.append(f"the kernel's detected rules differ from variant {variant.name}'s: "
                           + ", ".join(differ))
    if header is not None:
        if geo.sparse is False:
            raise ValidateError("--trace needs a SPARSEMEM kernel (FLATMEM has no memory hotplug)")
        if header.get("release") not in (None, geo.release):
            raise ValidateError(f"{trace}: recorded on {header.get('release')}, target is {geo.release}")
        for key, have in (("section_pages", geo.section_pages), ("page_size", geo.page_size),
                          ("entry_size", geo.entry_size)):
            if header.get(key) is not None and header[key] != have:
                raise ValidateError(f"{trace}: {key} {header[key]} but the target has {have}")
        result, ev_diffs = replay(machine, variant, events, header.get("probes", "direct"))
        diffs, notes = diff_layouts(result.layout, walked, total_exact=True)
        diffs += [d for d in ev_diffs if not d.startswith("note: ")]
        notes += [d[6:] for d in ev_diffs if d.startswith("note: ")]
    else:
        from .model import simulate
        result = simulate(machine, variant)
        diffs, notes = diff_layouts(result.layout, walked, total_exact=False)
    usage = "unknown" if walked.total_usage is None else walked.total_usage
    summary = (f"{geo.release}: variant {variant.name}; predicted {len(result.layout.tables)} tables, "
               f"{result.layout.total_bytes} bytes, total_usage {result.total_usage}; kernel "
               f"{len(walked.tables)} tables, {walked.total_bytes} bytes, total_usage {usage}")
    return diffs, rules_notes + notes, summary


def validate_program(prog, header: Optional[dict], events: Optional[list], variant_name: Optional[str] = None,
                     trace: str = "") -> tuple[list[str], list[str], str]:
    """:func:`validate_session` on an open drgn Program (a real kernel or a synthetic one)."""
    from ..session import PageExt
    return validate_session(PageExt(prog), header, events, variant_name, trace)
