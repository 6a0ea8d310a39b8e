"""The leak hunt across many machines: a fleet of snapshots, asked by DuckDB or Spark (issue 22).

Design.  A fleet is a directory of ordinary snapshot files
(:mod:`inspector.history.snapshot`), one per host and moment, laid out in
hive partitions ``host=H/kernel=R/date=D/`` (:mod:`.layout`, written by
``snapshot --fleet DIR`` and by the checkout's fleet generator) so that any engine can
prune by host, kernel or day.  Reading one is two steps:

1. :func:`.layout.scan` walks the tree, prunes by the partition names
   (``--host``, ``--kernel``, ``--since``/``--until``), and reads each
   remaining file's footer (our key-value metadata, not its rows): a file
   that is not Parquet, is truncated, is someone else's Parquet, or has a
   schema newer than this tool knows is named and left out (the answer is
   then partial, exit 3).  The files kept are grouped by schema version.
2. An engine (:mod:`.engines`: DuckDB in-process, the default, or Spark,
   ``local[*]`` or a cluster's ``--master``) puts the groups behind one view,
   ``fleet``, mapping each schema version's columns onto the fleet's
   (:data:`.layout.COLUMNS`); then each question (:mod:`.questions`) is one
   SQL text that both engines run as it is.  The tests prove that both give
   the same table for every question.

This package imports neither duckdb nor pyspark at import time; the command
is :mod:`.cli`.
"""
