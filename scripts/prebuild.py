#!/usr/bin/env python3
"""Build, one after another, every test kernel a run needs besides the main one.

Design.  A cold run of scripts/test.sh spends most of its time compiling
kernels on two cores.  The tests on the main 6.1 kernel (built before pytest
starts) keep the machine about half busy, so scripts/test.sh starts this
script in the background, at the lowest priority, right after that build:
it builds the kernels of tests/conftest.py's :func:`prebuild_plan` (the 6.1
no-notrace variant, 6.12, 7.3, and whatever PAGEEXT_KERNELS adds) in the
order conftest's :data:`LATE_MODULES` runs their tests.  A test that needs a
kernel before it is done waits on build-kernel.sh's lock for that kernel and
then finds it cached, so nothing is built twice.

    scripts/prebuild.py            # what scripts/test.sh runs, logged to $PAGEEXT_CACHE/prebuild.log
    scripts/prebuild.py --list     # the build-kernel.sh command lines only
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import prebuild_plan  # noqa: E402


def main() -> int:
    plan = prebuild_plan()
    if "--list" in sys.argv[1:]:
        print("\n".join(" ".join(args) for args in plan))
        return 0
    for args in plan:
        start = time.monotonic()
        proc = subprocess.run(args, stdout=subprocess.PIPE, text=True)
        where = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "(no output)"
        print(f"prebuild: {time.monotonic() - start:.0f} s, exit {proc.returncode}: {where}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
