"""Client decoders: what each page_ext client stores per page, decoded in bulk.

This is the "clients" stage of the data flow (target -> discover -> walk ->
verify -> clients -> report).  The walker gives the tables; a client decoder
reads each table with one ``prog.read`` and unpacks the entries with
:mod:`struct`, using field offsets taken from the target's DWARF (never one
drgn Object per page).  Names the kernel prints -- gfp and page flags,
migratetypes, migrate reasons, symbols -- come from the target's own tables
(:mod:`.kformat`), so output follows the target's version, not ours.

* :mod:`.page_owner`: per-page allocation records, the ``owner`` and ``top``
  commands, and byte-identical ``/sys/kernel/debug/page_owner`` text;
* :mod:`.stackdepot`: stack handles to text, each unique handle once;
* :mod:`.page_table_check`: anon/file map counts and their consistency.
* :mod:`.alloc_tag`: memory allocation profiling's per-page tag, per tag
  beside the kernel's /proc/allocinfo counters (the ``alloc-tags`` command).
"""
