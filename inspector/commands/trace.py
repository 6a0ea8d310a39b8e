"""The ``trace`` command: live page_ext hotplug events of the running kernel (root, bcc).

It reads no target through drgn (the tracer probes the kernel it runs on),
so it has no target options and no drgn command.
"""

from __future__ import annotations

from .base import Command, Context, Opt


def run(ctx: Context) -> int:
    from ..trace.tracer import run_trace
    a = ctx.args
    return run_trace(a.as_json, a.record, a.duration, a.count, a.probes)


COMMANDS = [
    Command("trace", "Trace page_ext table allocations and frees caused by memory hotplug, live (root, bcc).",
            run, (
                Opt(("--json",), "as_json", "JSON Lines on stdout (summary on stderr)", bool, False),
                Opt(("--record",), "record", "write the trace file (header + events)", metavar="FILE"),
                Opt(("--duration",), "duration", "stop after S seconds", int, None, metavar="S", minimum=1),
                Opt(("--count",), "count", "stop after N events", int, None, metavar="N", minimum=1),
                Opt(("--probes",), "probes", "auto | direct | notifier", str, "auto", metavar="MODE"),
            ), description="""Prints 'tracing: ready' on stderr once the probes are attached.

\b
Examples:
  pageext-inspect trace                         # until Ctrl-C, then a summary
  pageext-inspect trace --record t.jsonl        # for validate --trace t.jsonl
  pageext-inspect trace --json --duration 60    # JSON Lines for a minute
  pageext-inspect trace --probes notifier       # force the memory_notify fallback""", target=False),
]
