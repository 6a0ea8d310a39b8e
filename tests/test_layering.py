"""The layout of issue 19 holds: no import circles, and every import goes down the floors.

The graph is scripts/imports.py's (one parser: module-level and
function-local imports alike, relative ones resolved).  Its
:data:`FLOORS` put each module on a floor -- facts; reading kernels;
decode/; clients/; the session; helpers/, history/, sim/, trace/ beside
each other; commands/; the entry points cli.py and drgn_plugin.py -- and
a module imports only from its own floor or those below.  In particular no
module below commands/ imports commands/, cli or drgn_plugin.  The checker
itself is checked on a copy of the package with violations planted.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports():
    spec = importlib.util.spec_from_file_location("imports_script", ROOT / "scripts" / "imports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


imports = _imports()


def test_the_package_keeps_its_floors():
    edges, _ = imports.graph()
    assert "inspector.commands.base" in edges and "inspector.decode.owner" in edges  # the parser saw the package
    assert imports.problems(edges) == []


def test_no_module_below_commands_imports_the_command_layer():
    edges, _ = imports.graph()
    low = [m for m in edges if imports.floor(m) < imports.floor("inspector.commands")]
    assert len(low) > 40
    for m in low:
        bad = [b for b in edges[m] if b in ("inspector.cli", "inspector.drgn_plugin", "inspector.commands")
               or b.startswith("inspector.commands.")]
        assert bad == [], m


def test_planted_violations_are_caught(tmp_path):
    pkg = tmp_path / "inspector"
    shutil.copytree(ROOT / "inspector", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    # a decoder that reaches for an option (function-local, as workarounds are)
    with open(pkg / "decode" / "sums.py", "a") as f:
        f.write("\n\ndef _planted():\n    from ..commands import LIMIT\n    return LIMIT\n")
    # a circle: the kernel lookups importing the session that imports them
    with open(pkg / "kernel.py", "a") as f:
        f.write("\nfrom .session import PageExt  # noqa\n")
    (pkg / "newthing.py").write_text("from . import errors\n")
    found = imports.problems(imports.graph(pkg)[0])
    assert "below the command layer: inspector.decode.sums imports inspector.commands" in found
    assert "upward: inspector.decode.sums (decode) imports inspector.commands (commands)" in found
    assert "upward: inspector.kernel (reading) imports inspector.session (session)" in found
    assert any(p.startswith("import circle: ") and "inspector.kernel" in p and "inspector.session" in p
               for p in found)
    assert "no floor: inspector.newthing (add it to FLOORS in scripts/imports.py)" in found
