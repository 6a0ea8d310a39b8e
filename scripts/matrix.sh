#!/usr/bin/env bash
# The kernel x feature matrix: every VM test on every kernel, then the README's
# table written from the results by scripts/matrix.py (never by hand).
#
#   scripts/matrix.sh                      # all kernels: 5.10 6.1 6.12 7.2 7.3 + stock 5.10 6.1 7.2
#   scripts/matrix.sh --kernels 7.2,7.3    # some of the built ones (stock kernels still run)
#   scripts/matrix.sh --no-stock -k owner  # pytest arguments after the options
#
# Results land in $PAGEEXT_MATRIX_DIR (default /tmp/pageext-matrix): one JUnit
# file for the built kernels, one per stock kernel (stock-VERSION.xml).  A cold
# run builds five kernels and fetches three stock ones (about 1 GB each).
set -uo pipefail
cd "$(dirname "$0")/.."
kernels=all
stock=1
while [ $# -gt 0 ]; do
    case $1 in
        --kernels) kernels=${2:?--kernels needs all or a list}; shift 2 ;;
        --no-stock) stock=; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) break ;;
    esac
done
out=${PAGEEXT_MATRIX_DIR:-/tmp/pageext-matrix}
rm -rf "$out"; mkdir -p "$out"
start=$(date +%s)
PAGEEXT_PREBUILD=1 scripts/test.sh --kernels "$kernels" -m vm --junitxml="$out/built.xml" "$@"
if [ -n "$stock" ]; then
    for s in "5.10 bullseye,bullseye-security" "6.1 " "7.2 sid"; do
        v=${s%% *}; suites=${s#* }
        dir=$(scripts/debian-kernel.sh ${suites:+-s "$suites"} | tail -n 1) || { echo "matrix: no stock $v" >&2; continue; }
        PAGEEXT_DEBIAN_KERNEL_DIR=$dir .venv/bin/python -m pytest -q tests/test_vm_distro.py \
            --junitxml="$out/stock-$v.xml" "$@"
    done
fi
secs=$(( $(date +%s) - start ))
.venv/bin/python scripts/matrix.py --seconds "$secs" --readme README.md \
    --command "scripts/matrix.sh${kernels:+ --kernels $kernels}" "$out"/*.xml
echo "matrix: README.md updated from $out after $secs s" >&2
