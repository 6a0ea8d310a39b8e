#!/usr/bin/env bash
# The test command: set up, build (or reuse) the test kernel, fetch (or reuse)
# Debian's stock kernel, run every test.
# Extra arguments go to pytest (e.g. scripts/test.sh -k hot_add).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PAGEEXT_KERNEL_DIR=${PAGEEXT_KERNEL_DIR:-$(scripts/build-kernel.sh | tail -n 1)}
# Debian's stock kernel for tests/test_vm_distro.py: about 930 MB the first
# time, then reused from the same cache as the built kernels.
export PAGEEXT_DEBIAN_KERNEL_DIR=${PAGEEXT_DEBIAN_KERNEL_DIR:-$(scripts/debian-kernel.sh | tail -n 1)}
exec .venv/bin/python -m pytest -q -rs "$@"
