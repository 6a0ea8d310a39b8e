#!/usr/bin/env bash
# The kernel x feature matrix: every VM test on every kernel, then the README's
# table written from the results by scripts/matrix.py (never by hand).
#
#   scripts/matrix.sh                         # all kernels: 5.10 6.1 6.12 7.2 7.3 + stock 5.10 6.1 7.2
#   scripts/matrix.sh --kernels 5.10,7.2      # some of the built ones (stock kernels still run)
#   scripts/matrix.sh --kernels arm64-64k,arm64-7.3-4k --modules arm64 --no-stock   # arm64 only
#   scripts/matrix.sh --kernels 7.2 --modules owner,kdump --no-stock -k debugfs   # just these modules
#   scripts/matrix.sh --resume                # go on after an interrupted run: finished modules are kept
#
# One pytest run per VM module, each writing its own JUnit file into
# $PAGEEXT_MATRIX_DIR (default /tmp/pageext-matrix), so a run cut short keeps
# every module it finished (--resume skips them); one file per stock kernel
# (stock-VERSION.xml).  The modules written on one kernel run on each kernel
# named (tests/conftest.py module_kernels).  The kernels are built
# first (scripts/prebuild.py, the same plan as test.sh's background builds).
# Pytest arguments go after the options.
set -uo pipefail
cd "$(dirname "$0")/.."
kernels=all
stock=1
resume=
chosen=
modules="inspect versions kdump owner owner_sort drgn trace validate live hostile bounds alloc_tags history"
while [ $# -gt 0 ]; do
    case $1 in
        --kernels) kernels=${2:?--kernels needs all or a list}; shift 2 ;;
        --modules) modules=${2:?--modules needs a list such as owner,kdump}; modules=${modules//,/ }; chosen=1; shift 2 ;;
        --no-stock) stock=; shift ;;
        --resume) resume=1; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) break ;;
    esac
done
# Without --modules, the kernels' own modules too: 7.x's (tests/test_vm_7x_*.py)
# and arm64's (tests/test_vm_arm64.py: 6.12 4K always, plus each arm64 kernel
# named: conftest.ARM64_KERNELS).  --modules runs just the modules it names.
if [ -z "$chosen" ]; then
    case ",$kernels," in *,all,*|*,7.3,*) modules="$modules 7x_decode 7x_clients" ;; esac
    case ",$kernels," in *,all,*|*,arm64-*) modules="$modules arm64" ;; esac
fi
out=${PAGEEXT_MATRIX_DIR:-/tmp/pageext-matrix}
[ -n "$resume" ] || rm -rf "$out"
mkdir -p "$out"
start=$(date +%s)
scripts/setup.sh
scripts/build-kernel.sh > /dev/null  # the main 6.1 kernel: variants start from its tree
PAGEEXT_KERNELS=$kernels .venv/bin/python scripts/prebuild.py || echo "matrix: a kernel did not build (its tests will say)" >&2
export PAGEEXT_LIVE_RUNS=${PAGEEXT_LIVE_RUNS:-50}  # the full size (scripts/test.sh's default is CI's 20)
for m in $modules; do
    xml=$out/test_vm_$m.xml
    if [ -n "$resume" ] && [ -s "$xml" ]; then echo "matrix: $m done before" >&2; continue; fi
    echo "matrix: $m ($(date +%H:%M:%S))" >&2
    PAGEEXT_PREBUILD=0 scripts/test.sh --kernels "$kernels" "tests/test_vm_$m.py" --junitxml="$xml.part" "$@"
    [ -s "$xml.part" ] && mv "$xml.part" "$xml"
done
if [ -n "$stock" ]; then
    for s in "5.10 bullseye,bullseye-security" "6.1 " "7.2 sid"; do
        v=${s%% *}; suites=${s#* }
        [ -n "$resume" ] && [ -s "$out/stock-$v.xml" ] && continue
        dir=$(scripts/debian-kernel.sh ${suites:+-s "$suites"} | tail -n 1) || { echo "matrix: no stock $v" >&2; continue; }
        PAGEEXT_DEBIAN_KERNEL_DIR=$dir .venv/bin/python -m pytest -q tests/test_vm_distro.py \
            --junitxml="$out/stock-$v.xml" "$@"
    done
fi
secs=$(( $(date +%s) - start ))
.venv/bin/python scripts/matrix.py --seconds "$secs" --readme README.md \
    --command "scripts/matrix.sh${kernels:+ --kernels $kernels}" "$out"/*.xml
echo "matrix: README.md updated from $out after $secs s" >&2
