"""Leak hunting over time: snapshots, diff, watch and plot (issue 13).

Design.  page_owner tells which stack holds every page *now*; a leak is
which stacks keep holding more.  So the unit here is the snapshot
(:mod:`.snapshot`): page_owner's outstanding pages and allocations summed
per stack (and per node and migratetype) and per task, taken in one pass
through the existing decoder (:meth:`PageOwner.sums`), written as a small
Parquet file whose size grows with the unique stacks, not with memory, and
which says where, when and from which boot it came.  Everything that
compares moments is DuckDB SQL over such files, run in-process
(:mod:`.analysis`): ``diff`` of two moments, the trend over many and the
leak-suspect rule.  ``watch`` (:mod:`.watch`) samples a live kernel
repeatedly -- pausing a QEMU guest through a small QMP client
(:mod:`.qmp`) -- and shows the stacks that grow; ``plot`` (:mod:`.plot`)
draws them.  ``owner --format parquet`` (:mod:`.records`) writes the raw
records for those who want every row.

This package is library only; the commands (snapshot, diff, watch, plot)
are :mod:`inspector.commands.history`, thin over these modules.
"""
