"""Text that comes from a dump, made safe to print.

Strings read from a target (a task's comm, a symbol or cgroup name, the
release) are whatever bytes the kernel held, and a damaged dump holds
anything: :func:`escape` turns control and other unprintable characters
into Python-style escapes, so nothing from a core can drive a user's
terminal.  Text meant to equal the kernel's own bytes (``--format debugfs``
to a file or pipe) is written raw instead, and escaped only on a terminal.
"""

from __future__ import annotations


def escape(text: str) -> str:
    """Printable form of a string read from a dump (control bytes escaped)."""
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii") if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
    return "".join(out)


def comm_text(raw: bytes) -> str:
    """A task's ``comm[TASK_COMM_LEN]`` as read from a dump: up to its NUL, escaped.

    >>> comm_text(b"ev\\x1bil\\x00junk")
    'ev\\\\x1bil'
    """
    return escape(raw.split(b"\0", 1)[0].decode("latin-1"))


def escape_lines(data: bytes) -> str:
    """Bytes of the kernel's text (latin-1), escaped line by line for a terminal."""
    return "".join(escape(line) + "\n" for line in data.decode("latin-1").split("\n")[:-1])
