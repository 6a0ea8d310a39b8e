"""The page_ext clients: each declared once, decoded in bulk.

A page_ext client is a ``struct page_ext_operations`` in mm/page_ext.c's
``page_ext_ops[]``: page_owner, page_table_check, page_idle (32-bit),
page_alloc_tagging, page_iommu_debug (v7.0), and others a kernel may have.  Every client we know is
declared here by one :class:`ClientSpec` -- its ops symbol, config option,
how a boot enables it, how to tell whether it is active, and (when we can
decode its data) the module that does.  A client module is a module of this
package that sets ``CLIENT = ClientSpec(...)``; it holds the decoder of
that client (library only: no printing, no options), and its commands, if
any, are the module of the same name in :mod:`inspector.commands`.

The decoders all read through :mod:`inspector.decode.engine`: each page_ext table (and the
memmap beside it) is read once per chunk into a numpy array whose fields
come from the target's DWARF, and selections, flag tests and aggregations
are whole-array operations.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Optional

import drgn
from ..kernel import obj, static_key_enabled


@dataclass(frozen=True)
class ClientSpec:
    """One page_ext client as the kernel declares it and as we decode it."""

    name: str  # the ops symbol without "_ops", e.g. "page_owner"
    config: str  # the Kconfig option that compiles it in
    enable: str  # how a boot switches it on, for messages
    summary: str = ""  # what it keeps per page, one line
    # Is it active in this boot?  None: the probe cannot tell (then the
    # generic rule on its offset applies, see inspector.discover).
    active: Optional[Callable[[drgn.Program], Optional[bool]]] = None
    # "module:Class" of its decoder (taking a PageExt session), if we have one.
    decoder: Optional[str] = None
    # The ops object is __initdata (freed after boot): discover rebuilds the
    # client with this function (prog, clients found so far, rules, allocated).
    rebuild: Optional[Callable] = None
    commands: tuple[str, ...] = field(default=())

    @property
    def ops(self) -> str:
        """The client's ``struct page_ext_operations`` symbol.

        :return: e.g. ``"page_owner_ops"``
        """
        return self.name + "_ops"


def _key(name: str) -> Callable[[drgn.Program], Optional[bool]]:
    def probe(prog: drgn.Program) -> Optional[bool]:
        key = obj(prog, name)
        if key is None or key.absent_:
            return None
        try:
            return static_key_enabled(key)
        except (drgn.FaultError, LookupError, AttributeError):
            return None
    return probe


# Clients we know but do not decode: enough to name them and say how to enable them.
KNOWN: tuple[ClientSpec, ...] = (
    ClientSpec("debug_guardpage", "CONFIG_DEBUG_PAGEALLOC", "boot with debug_pagealloc=on",
               "guard page flag (v3.19 .. v5.2)", active=_key("_debug_guardpage_enabled")),
    ClientSpec("page_poisoning", "CONFIG_PAGE_POISONING", "boot with page_poison=on",
               "poison flag (v3.19 .. v4.15)"),
    ClientSpec("page_pinner", "CONFIG_PAGE_PINNER", "boot with page_pinner=on",
               "pin/migration-failure records (Android common kernel)"),
)

_registry: Optional[dict[str, ClientSpec]] = None
# The order clients' commands are listed in (others follow by name).
ORDER = ("page_owner", "page_table_check", "alloc_tag", "page_idle")


def registry() -> dict[str, ClientSpec]:
    """name -> ClientSpec of every client we know, decoded ones first (in
    ORDER, then by name).

    :return: name -> :class:`ClientSpec`

    >>> list(registry())[:4]
    ['page_owner', 'page_table_check', 'page_alloc_tagging', 'page_idle']
    """
    global _registry
    if _registry is None:
        found: dict[str, ClientSpec] = {}
        rank = {name: i for i, name in enumerate(ORDER)}
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: (rank.get(i.name, len(rank)), i.name)):
            if info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{__name__}.{info.name}")
            spec = getattr(module, "CLIENT", None)
            if isinstance(spec, ClientSpec):
                found[spec.name] = spec
        for spec in KNOWN:
            found.setdefault(spec.name, spec)
        _registry = found
    return _registry


def spec(name: str) -> Optional[ClientSpec]:
    """The :class:`ClientSpec` of one client.

    :param name: the client's name (its ops symbol without ``_ops``)
    :return: its :class:`ClientSpec`, None for a client we do not know

    >>> spec("page_owner").config
    'CONFIG_PAGE_OWNER'
    >>> spec("page_owner").commands
    ('owner', 'top')
    """
    return registry().get(name)


def static_key_probe(name: str) -> Callable[[drgn.Program], Optional[bool]]:
    """An ``active`` probe: the static key ``name`` is enabled.

    :param name: the static key's symbol, e.g. ``"page_owner_inited"``
    :return: ``probe(prog) -> bool or None`` (None: the key is not in the target)

    >>> static_key_probe("page_owner_inited")(prog)
    True
    """
    return _key(name)


def decoder_class(spec_: ClientSpec):
    """The decoder class of a client, imported on first use.

    :param spec_: a :class:`ClientSpec`
    :return: the class, taking a :class:`~inspector.session.PageExt` session
    :raises LookupError: the client has no decoder

    >>> decoder_class(spec("page_owner")).__name__
    'PageOwner'
    """
    if not spec_.decoder:
        raise LookupError(f"pageext-inspect has no decoder for {spec_.name}")
    module, _, cls = spec_.decoder.partition(":")
    return getattr(importlib.import_module(module), cls)
