"""The reference simulator of mm/page_ext.c.

Design: :mod:`inspector.versions` names the rules that differ between kernel versions,
each citing its commit and function; :mod:`.model` is the one deterministic
model of boot, hotplug and rollback that branches on those rules and returns
the event log, ``total_usage``, the dmesg line and an
:class:`inspector.model.Layout` -- the walker's own type, so predictions and
walks compare directly; :mod:`.scenarios` keeps named inputs and their
recorded runs in inspector/sim/recorded; :mod:`.synthetic` turns a simulated layout
into a real :class:`drgn.Program` for the unchanged walker and verifier, and
carries the corruption catalogue; :mod:`.validate` compares a real kernel's
walk (and optionally a bcc trace) with the simulator's prediction;
the ``simulate`` and ``validate`` commands are :mod:`inspector.commands.sim`.
"""

from .model import SimError, SimResult, simulate  # noqa: F401
from ..versions import VARIANTS, Variant, get, variant_for_release  # noqa: F401
