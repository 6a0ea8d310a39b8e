"""The command layer: every command, defined once for the CLI and drgn.

Design.  Commands sit on top of the library (issue 19): a command module
parses its options, calls the library (a :class:`~inspector.session.PageExt`
session, a client decoder, :mod:`inspector.history`, :mod:`inspector.sim`)
and prints; no module below this package imports it.  The framework --
:class:`Command`, :class:`Opt`, :class:`Context`, the shared options, exit
statuses, :func:`consistent` and :func:`all_commands` -- is :mod:`.base`,
re-exported here.  One module per command group:

* :mod:`.report`: ``inspect``, ``clients``
* :mod:`.page_owner`: ``owner``, ``top``
* :mod:`.page_table_check`: ``table-check``
* :mod:`.alloc_tag`: ``alloc-tags``
* :mod:`.page_idle`: ``page-idle``
* :mod:`.trace`: ``trace``
* :mod:`.history`: ``snapshot``, ``diff``, ``watch``, ``plot``
* :mod:`.sim`: ``simulate``, ``validate``

The front ends, :mod:`inspector.cli` and :mod:`inspector.drgn_plugin`,
turn these definitions into typer commands and ``%`` drgn commands.
"""

from .base import (ARCH, CHANGED, EXIT_FAIL, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, JSON, LIMIT, MODULES, NODE,  # noqa: F401
                   PFN, RANGE, RETRIES, THRESHOLD, TIMEOUT, VMLINUX, Command, Context, Opt, all_commands, consistent,
                   finish, missing_json, parse_int, parse_range, parse_timeout, pfn_selection, timeout_of)
