#!/usr/bin/env bash
# The test command: set up, build (or reuse) the test kernels, fetch (or reuse)
# Debian's stock kernel, run every test.
#
#   scripts/test.sh                       # CI's kernels: 6.1, 6.12, 7.3 (what .ci/run runs)
#   scripts/test.sh --kernels all         # also 5.10 and 7.2 (the matrix: scripts/matrix.sh)
#   scripts/test.sh --kernels 7.2 -k owner
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
export PAGEEXT_KERNEL_DIR=${PAGEEXT_KERNEL_DIR:-$(scripts/build-kernel.sh | tail -n 1)}
# Debian's stock kernel for tests/test_vm_distro.py: about 930 MB the first
# time, then reused from the same cache as the built kernels.
export PAGEEXT_DEBIAN_KERNEL_DIR=${PAGEEXT_DEBIAN_KERNEL_DIR:-$(scripts/debian-kernel.sh | tail -n 1)}
# Debian's stock 7.2 (sid) for tests/test_vm_72_stock.py (HVO, the 7.x stack
# depot and pageblock bits on a distribution kernel): about 1.2 GB the first time.
export PAGEEXT_DEBIAN72_KERNEL_DIR=${PAGEEXT_DEBIAN72_KERNEL_DIR:-$(scripts/debian-kernel.sh -s sid | tail -n 1)}
exec .venv/bin/python -m pytest -q -rs "$@"
