"""page_iommu_debug: the IOMMU debug page-alloc sanitizer's per-page mapping count.

v7.0 (Mostafa Saleh, "iommu: Add page_ext for IOMMU_DEBUG_PAGEALLOC", the
first patch of the "iommu: debug-pagealloc" series; linux-next 466ae6978a5b)
adds drivers/iommu/iommu-debug-pagealloc.c with CONFIG_IOMMU_DEBUG_PAGEALLOC:
``page_iommu_debug_ops`` is the last entry of mm/page_ext.c's
``page_ext_ops[]``, its data one ``struct iommu_debug_metadata { atomic_t
ref; }`` -- how many IOMMU mappings (at the domain's smallest page size) point
at the page -- so ``.size`` is 4 and it has no ``need_shared_flags``.

Whether it is on: ``need_iommu_debug()`` returns the file's ``static bool
needed``, set only by the early parameter ``iommu.debug_pagealloc=1``
(kstrtobool).  When it is off invoke_need_callbacks() never gives it an
offset, so its ops keep offset 0 and size 4: the generic rule of
:mod:`inspector.discover` (a client at offset 0 without shared flags may be
the only one) would call it active and place it over the shared flags word.
So its activity is read from ``needed`` itself (the variable is not
__initdata: iommu_debug_init() reads it after boot); where the debug info
lacks it, from the static key ``iommu_debug_initialized`` that
iommu_debug_init() enables iff ``needed`` (at iommu_subsys_init).

We do not decode the counts (no command): the client is reported on or off
with its offset and size, and its 4 bytes are accounted for in the entry.
"""

from __future__ import annotations

from typing import Optional

import drgn

from .. import kernel as k
from . import ClientSpec, static_key_probe

CLIENT_NAME = "page_iommu_debug"
CONFIG = "CONFIG_IOMMU_DEBUG_PAGEALLOC"
SOURCE_FILE = "iommu-debug-pagealloc.c"


def active(prog: drgn.Program) -> Optional[bool]:
    """Is page_iommu_debug on in this boot: need_iommu_debug()'s ``needed``,
    else the static key ``iommu_debug_initialized``; None when neither can be read.

    :param prog: the target
    :return: True or False, None where the target cannot tell
    """
    needed = k.value(prog, "needed", SOURCE_FILE)
    if needed is not None:
        return bool(needed)
    return static_key_probe("iommu_debug_initialized")(prog)


CLIENT = ClientSpec(CLIENT_NAME, CONFIG, "boot with iommu.debug_pagealloc=1",
                    "IOMMU mapping count of each page (v7.0; not decoded)", active=active)
