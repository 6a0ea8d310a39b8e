#!/usr/bin/env bash
# The test command: set up, build (or reuse) the test kernels, fetch (or reuse)
# Debian's stock kernel, run every test.
#
#   scripts/test.sh                       # CI's kernels: 6.1, 6.12, 7.3 (what .ci/run runs)
#   scripts/test.sh --kernels all         # also 5.10 and 7.2 (the matrix: scripts/matrix.sh)
#   scripts/test.sh --kernels 7.2 -k owner
#   scripts/test.sh --kernels 6.1,no-page-ext,i386   # the kernels CI leaves out (conftest.EXTRA_BUILDS)
#
# Other arguments go to pytest (e.g. scripts/test.sh -k hot_add).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--kernels" ]; then
    [ -n "${2:-}" ] || { echo "test.sh: --kernels needs all or a list such as 6.1,7.3" >&2; exit 2; }
    export PAGEEXT_KERNELS=$2
    shift 2
fi
scripts/setup.sh
# Sample sizes: the fuzz corpus at half its full size (about 275 damaged cores,
# tests/test_fuzz.py) and 20 runs of each command under live hotplug
# (tests/test_vm_live.py), so that a cold run stays within its hour (issue 18,
# item 7); every command and core is still in the corpus.  scripts/matrix.sh
# runs the live module at 50; PAGEEXT_FUZZ=1 the whole corpus.
export PAGEEXT_FUZZ=${PAGEEXT_FUZZ:-0.5} PAGEEXT_LIVE_RUNS=${PAGEEXT_LIVE_RUNS:-20}
# Debian's stock kernels (tests/test_vm_distro.py: 6.1, about 930 MB the
# first time; tests/test_vm_72_stock.py: sid's 7.2, about 1.2 GB, for HVO, the
# 7.x stack depot and pageblock bits on a distribution kernel), then reused
# from the same cache as the built kernels.  Fetched in the background while
# the main kernel builds (a cold run saved 214 s of waiting: 22 s and 192 s).
stock=$(mktemp -d)
( [ -n "${PAGEEXT_DEBIAN_KERNEL_DIR:-}" ] || scripts/debian-kernel.sh > "$stock/6.1" || true
  [ -n "${PAGEEXT_DEBIAN72_KERNEL_DIR:-}" ] || scripts/debian-kernel.sh -s sid > "$stock/7.2" || true ) &
fetch=$!
export PAGEEXT_KERNEL_DIR=${PAGEEXT_KERNEL_DIR:-$(scripts/build-kernel.sh | tail -n 1)}
# The other kernels the run needs are built in the background, at the lowest
# priority, while the tests on the main kernel run (scripts/prebuild.py; the
# tests that need them run last and wait on build-kernel.sh's lock).  On for a
# whole run; PAGEEXT_PREBUILD=1 forces it, =0 turns it off.
prebuild=${PAGEEXT_PREBUILD:-$([ $# -eq 0 ] && echo 1 || echo 0)}
if [ "$prebuild" = 1 ]; then
    log=${PAGEEXT_CACHE:-/var/cache/pageext-inspect}/prebuild.log
    setsid nice -n 19 .venv/bin/python scripts/prebuild.py > "$log" 2>&1 &
    bg=$!
    # A selection that did not need them all, or a failed download: stop it.
    trap 'kill -- -"$bg" 2>/dev/null || true' EXIT
    echo "test.sh: building the other test kernels in the background (pid $bg, log $log)" >&2
fi
wait "$fetch"
export PAGEEXT_DEBIAN_KERNEL_DIR=${PAGEEXT_DEBIAN_KERNEL_DIR:-$(tail -n 1 "$stock/6.1" 2>/dev/null)}
export PAGEEXT_DEBIAN72_KERNEL_DIR=${PAGEEXT_DEBIAN72_KERNEL_DIR:-$(tail -n 1 "$stock/7.2" 2>/dev/null)}
rm -rf "$stock"
rc=0
.venv/bin/python -m pytest -q -rs "$@" || rc=$?
exit $rc
