"""pageext-inspect: locate, verify and decode the Linux kernel's page_ext memory.

Data flow, one module a stage:  target (open a kernel) -> discover (its
page_ext geometry and version rules) -> walk (every table, as a
model.Layout) -> verify (named checks) -> clients (decode each client's
data, column by column) -> report (text, tables, JSON).  A
:class:`PageExt` session holds what each stage learnt for one kernel; the
reference simulator (inspector.sim) produces the same model.Layout, so a
prediction and a walk compare directly.

Library use, in a drgn session or a script::

    from inspector import PageExt
    pe = PageExt(prog)                 # or PageExt.open("vmcore", vmlinux="vmlinux")
    pe.layout.tables, pe.checks
    for batch in pe.client("page_owner").batches(): ...

and the drgn-style helpers in :mod:`inspector.helpers`.
"""

try:  # one place for the version: pyproject.toml, as the installed metadata says it
    from importlib.metadata import PackageNotFoundError, version as _version
    __version__ = _version("pageext-inspect")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "unknown"

from .errors import (ClientError, CorruptError, MissingDataError, NoPageExtError, PageExtError, TargetError,  # noqa: F401
                     UsageError, VerificationError)


def __getattr__(name: str):
    # The session pulls in drgn and numpy: import it on first use.
    if name == "PageExt":
        from .session import PageExt
        return PageExt
    raise AttributeError(name)
