"""The library's exceptions: what went wrong, in one line a user can act on.

Every error the library raises on purpose is a :class:`PageExtError`, and
also a built-in exception a caller may already catch: a name, a pfn or a
client that does not exist is a :class:`LookupError`; input that exists but
cannot be used (a truncated core, a vmlinux for another build, a page_ext
pointer that points nowhere) is a :class:`ValueError`.  The message is the
whole explanation.  Only the command line turns these into exit statuses (2
for bad input, 1 for a failed check, 3 for a partial answer); in a drgn
session they are ordinary exceptions.
"""

from __future__ import annotations


class PageExtError(Exception):
    """Base class of every error pageext-inspect raises on purpose."""


class TargetError(PageExtError, ValueError):
    """The kernel named cannot be opened or read: a missing, truncated or
    corrupt core, a vmlinux that does not match, a QMP socket that does not
    answer."""


class NoPageExtError(PageExtError, LookupError):
    """The kernel has no page_ext: built without CONFIG_PAGE_EXTENSION, or no
    entry exists for the pfn asked about."""


class MissingDataError(NoPageExtError):
    """What was asked about is not in the target (a page the dump lacks, a
    section whose mem_section entry is unreadable): the answer is partial
    (exit 3), not a bad question."""


class ClientError(PageExtError, LookupError):
    """A page_ext client is not compiled in, or compiled in but inactive in
    this boot; the message says how to enable it."""


class CorruptError(PageExtError, ValueError):
    """The kernel's own data contradicts itself: a loop in a list, a count
    beyond what the kernel allows, a pointer to nowhere."""


class UsageError(PageExtError, ValueError):
    """An argument the library cannot act on (a pfn range, a limit)."""


class VerificationError(PageExtError, ValueError):
    """A check the requested decode depends on failed (see ``checks``).

    Decoding on top of a failed ``bias``, ``extent`` or ``clients`` check
    would print garbage as fact; pass ``force=True`` to decode anyway, with
    the suspect tables marked."""

    def __init__(self, message: str, checks: list | None = None):
        super().__init__(message)
        self.checks = checks or []
