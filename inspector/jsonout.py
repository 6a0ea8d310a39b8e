"""How every command prints JSON: one indentation, and 64-bit quantities as hex strings.

The library's dicts (``to_json()``, the snapshot files' metadata, the fleet's
Parquet, the simulator's recordings) keep integers; only what a command
prints goes through here (README "JSON", issue 20).  The rule is per key,
written once in :data:`HEX_KEYS`: a value under one of those keys that is a
kernel address, a pointer, a stack depot handle or a flags word is printed
as a ``"0x..."`` string (lower case, no padding), because JavaScript and jq
before 1.7 round integers above 2**53.  Counts, sizes, pfns, pids, nids,
offsets and nanosecond times stay JSON integers.  ``None`` stays ``null``.

``owner --json`` formats its records column by column
(:meth:`~inspector.clients.page_owner.PageOwner.json_bytes`); it writes the
keys of :data:`HEX_KEYS` with ``%#x``, and tests/test_json_conventions.py
holds its keys to this set.
"""

from __future__ import annotations

import json
from typing import Any

# key -> what it holds, in every command's output (README "JSON" lists them)
HEX_KEYS = {
    "address": "a kernel virtual address (a page_ext table, an allocation tag)",
    "page_ext": "inspect's sections[]: the raw mem_section.page_ext pointer (INVALID bit included)",
    "ref": "alloc-tags --pfn: the page's codetag_ref (a tag's address)",
    "handle": "a stack depot handle",
    "free_handle": "a stack depot handle",
    "stack_handles": "missing: the stack depot handles whose records could not be read",
    "gfp_mask": "owner: the gfp flags word",
    "flags": "page-idle --pfn: the whole page_ext->flags word",
}


def hex_str(v: int) -> str:
    """One 64-bit quantity as JSON prints it: ``"0x..."``."""
    return f"{v:#x}"


def hexify(doc: Any, key: str = "") -> Any:
    """A copy of ``doc`` with the values of :data:`HEX_KEYS` as hex strings.

    Only integers (and lists of integers) under those keys change: a key of
    the same name that holds a dict or a list of ranges (``missing.page_ext``,
    ``inspect``'s top-level ``page_ext``) is walked, not converted.

    >>> hexify({"address": 0xffff888100000000, "bytes": 4096, "missing": {"stack_handles": [4660]}})
    {'address': '0xffff888100000000', 'bytes': 4096, 'missing': {'stack_handles': ['0x1234']}}
    >>> hexify({"page_ext": {"entry_size": 72}, "sections": [{"page_ext": 1, "section": 0}]})
    {'page_ext': {'entry_size': 72}, 'sections': [{'page_ext': '0x1', 'section': 0}]}
    """
    if isinstance(doc, dict):
        return {k: hexify(v, k) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        if key in HEX_KEYS and doc and all(isinstance(v, int) and not isinstance(v, bool) for v in doc):
            return [hex_str(v) for v in doc]
        return [hexify(v) for v in doc]
    if key in HEX_KEYS and isinstance(doc, int) and not isinstance(doc, bool):
        return hex_str(doc)
    return doc


def dumps(doc: Any) -> str:
    """A command's JSON document: :func:`hexify`, indented by one space."""
    return json.dumps(hexify(doc), indent=1, default=str)


def dumps_line(doc: Any) -> str:
    """One line of a JSON Lines stream (no indentation)."""
    return json.dumps(hexify(doc), default=str)
