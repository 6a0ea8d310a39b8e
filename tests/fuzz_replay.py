"""Replay one run of the fuzz corpus with PAGEEXT_DEBUG=1 (its traceback, if any).

    .venv/bin/python tests/fuzz_replay.py ID [RESULTS]   # RESULTS: $TMPDIR/pageext-fuzz/results.json
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import coremut  # noqa: E402

work = Path(tempfile.gettempdir()) / "pageext-fuzz"
results = json.loads(Path(sys.argv[2] if len(sys.argv) > 2 else work / "results.json").read_text())
r = next(x for x in results["results"] if x["id"] == int(sys.argv[1]))
print(f"#{r['id']} {r['core']} {r['kind']} [{r['what']}] {r['cmd']}: exit {r['rc']} {r['why']}")
pristine = str(work / f"pristine-{r['core']}") if r["core"].startswith("elf") else \
    str(work / {"kdump61": "core61.kdump", "plain61": "core61.plain"}[r["core"]])
copy = str(work / "replay")
shutil.copyfile(pristine, copy)
coremut.apply(copy, [coremut.Patch(p[0], bytes.fromhex(p[1]), p[2]) for p in r["patches"]], pristine)
argv = r["argv"] if isinstance(r["argv"], list) else None
if argv is None:
    sys.exit(f"a drgn command: drgn -c {copy} -s VMLINUX -e 'run_command(prog, {r['argv']!r})'")
argv = [copy if a == "@CORE@" or a.endswith(f"-{r['core']}") else a for a in argv]
exe = Path(sys.executable).parent / "pageext-inspect"
proc = subprocess.run([str(exe), *argv], env=dict(os.environ, PAGEEXT_DEBUG="1"), capture_output=True, text=True)
print("exit", proc.returncode)
(work / "replay.out").write_text(proc.stdout)
print(proc.stdout[-3000:])
print(proc.stderr[-6000:])
