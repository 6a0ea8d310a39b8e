"""The demo core that ships with the package: a real 6.1 post-mortem, no VM needed.

Design.  make-demo.py (in the source tree) made the three files beside this module from a
test guest that a planted tmpfs leak drove into an out-of-memory panic: the
capture kernel's ``makedumpfile -c -d 31`` vmcore, the debug info of the few
compilation units drgn needs (slice_debuginfo.py, beside it), xz-compressed,
and demo.json, what the kernel said about itself (its boot line "allocated N
bytes of page_ext", the leaker's pid).  :func:`files` unpacks the debug info
once into a cache directory ($XDG_CACHE_HOME/pageext-inspect, else
~/.cache/pageext-inspect, else the temporary directory) and returns the two
paths any command takes: ``pageext-inspect top CORE -s VMLINUX``.

>>> core, vmlinux = files()
>>> core.name, vmlinux.name.startswith("vmlinux-demo-")
('vmcore', True)
>>> facts()["leaker_comm"]
'leaker'
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import tempfile
from pathlib import Path

from ..errors import PageExtError

HERE = Path(__file__).resolve().parent


class DemoError(PageExtError):
    """The demo files are not there (a source tree without them) or unusable."""


def facts() -> dict:
    """demo.json: what the demo guest's kernel printed, and how the files were made."""
    try:
        return json.loads((HERE / "demo.json").read_text())
    except (OSError, ValueError) as e:
        raise DemoError(f"the demo core is not installed ({HERE / 'demo.json'}: "
                        f"{getattr(e, 'strerror', None) or e}); make-demo.py in a source checkout makes it") from None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache" if Path.home().is_dir() else None)
    return Path(base or tempfile.gettempdir()) / "pageext-inspect"


def files() -> tuple[Path, Path]:
    """(vmcore, vmlinux): the demo core and its debug info, unpacked on first use.

    :return: two paths for ``pageext-inspect COMMAND CORE -s VMLINUX``.
    :raises DemoError: the files are missing, or the unpacked debug info does
        not match demo.json's digest.
    """
    f = facts()
    core, packed = HERE / "vmcore", HERE / "vmlinux.debug.xz"
    if not core.is_file() or not packed.is_file():
        raise DemoError(f"the demo core is not installed in {HERE}; make-demo.py in a source checkout makes it")
    digest = f["vmlinux_debug_sha256"]
    out = _cache_dir() / f"vmlinux-demo-{digest[:12]}"
    if not out.is_file():
        try:
            raw = lzma.decompress(packed.read_bytes())
        except (lzma.LZMAError, OSError) as e:
            why = getattr(e, "strerror", None) or e
            raise DemoError(f"{packed}: cannot unpack ({why}): a damaged install") from None
        if hashlib.sha256(raw).hexdigest() != digest:
            raise DemoError(f"{packed}: unpacks to other bytes than demo.json's digest (a damaged install)")
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(f"{out.name}.{os.getpid()}")
        part.write_bytes(raw)
        part.replace(out)  # whole or not at all: another process may unpack at the same time
    return core, out
