"""``pageext-inspect trace``: watch page_ext tables being born and freed by memory hotplug, live.

The package: ``bpf.c`` (the BPF program), :mod:`.probes` (compile it, choose
and attach the probes), :mod:`.tracer` (raw events to the shared event
schema of :mod:`inspector.events`, in kernel order) and :mod:`inspector.commands.trace` (the
command).

Design: one small bcc program (``bpf.c``) is compiled once against the
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
that is NUMA_NO_NODE -- or the kernel's struct memory_notify has no such
member (v6.17+, the node moved to struct node_notify; bpf.c is compiled for
the layout the kernel's own include/linux/memory.h declares) -- the node of the
zone passed to online_pages() / offline_pages() (as online_page_ext() uses
pfn_to_nid(start_pfn)); the
notifier's return is turned into an errno as notifier_to_errno() does.
Output: events on stdout (text columns, or JSON Lines with --json); the probe
choice, its reasons and "tracing: ready" (once every probe is attached) on
stderr; the summary on stdout (stderr with --json).  Limits of the fallback:
a GOING_ONLINE that fails leaves no table behind, so it shows as a failed
notifier without init_section events; synthesised events carry the time of
their notifier call; invalidations are not visible; blocks of more than
MAX_SECTIONS sections are only partly seen (a warning says so).
"""


from .probes import TraceError  # noqa: F401
