#!/usr/bin/env bash
# The test command: set up, build (or reuse) the test kernel, run every test.
# Extra arguments go to pytest (e.g. scripts/test.sh -k hot_add).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PAGEEXT_KERNEL_DIR=${PAGEEXT_KERNEL_DIR:-$(scripts/build-kernel.sh | tail -n 1)}
exec .venv/bin/python -m pytest -q -rs "$@"
