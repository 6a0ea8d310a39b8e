#!/usr/bin/env bash
# Install what pageext-inspect and its test VM need, idempotently:
# Debian packages (QEMU, busybox, the kernel build chain, linux-source-6.1 and
# -6.12, Debian's bcc, kexec-tools and makedumpfile) and a venv in .venv that
# sees Debian's python3-bpfcc.  Everything the tests use is installed here, up
# front: a test never depends on another one having installed it first.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
pkgs=(qemu-system-x86 busybox-static cpio xz-utils python3-venv python3-bpfcc
      build-essential flex bison libelf-dev libssl-dev bc kmod linux-source-6.1 linux-source-6.12)
# The kdump tools run inside the test guest from the host's root over 9p
# (chroot /host kexec, chroot /host makedumpfile), as bcc does.  Without their
# recommends: makedumpfile's would pull in crash, kexec-tools' nothing needed.
kdump=(kexec-tools makedumpfile)
install() {  # install [apt-get options] PACKAGE...: the ones not installed yet
    local opts=() missing=() p
    while [ "${1:-}" != "${1#-}" ]; do opts+=("$1"); shift; done
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    echo "setup: installing ${missing[*]}" >&2
    [ -n "${updated:-}" ] || { apt-get update -q >&2; updated=1; }
    apt-get install -y -q "${opts[@]}" "${missing[@]}" >&2
}
install "${pkgs[@]}"
# kexec-tools would otherwise set LOAD_KEXEC=true: the host's own reboots
# would go through kexec.  We only want the binary.
echo "kexec-tools kexec-tools/load_kexec boolean false" | debconf-set-selections
install --no-install-recommends "${kdump[@]}"
# Spark for `fleet --engine spark` and its tests (tests/test_fleet.py, marked
# spark), only when asked: PAGEEXT_SPARK=1 scripts/setup.sh (or --spark).
# pyspark (the [spark] extra, about 450 MB) needs a Java runtime: Debian's
# headless JRE, unless a java is already there.  The default install stays light.
spark=${PAGEEXT_SPARK:-0}
[ "${1:-}" = "--spark" ] && spark=1
extras=test
modules="drgn, typer, tabulate, pyarrow, duckdb, matplotlib, qemu.qmp, pytest, jsonschema"
if [ "$spark" = 1 ]; then
    command -v java > /dev/null || install --no-install-recommends default-jre-headless
    extras=test,spark
    modules="$modules, pyspark"
fi
# Debian's bcc lives in /usr/lib/python3/dist-packages for /usr/bin/python3,
# so the venv is made from that interpreter with --system-site-packages.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import $modules" 2>/dev/null; then
    /usr/bin/python3 -m venv --system-site-packages .venv
    .venv/bin/pip install -q --disable-pip-version-check -e ".[$extras]" >&2
fi
