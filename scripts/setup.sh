#!/usr/bin/env bash
# Install what pageext-inspect and its test VM need, idempotently:
# Debian packages (QEMU, busybox, the kernel build chain, linux-source-6.1,
# Debian's bcc) and a venv in .venv that sees Debian's python3-bpfcc.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
pkgs=(qemu-system-x86 busybox-static cpio xz-utils python3-venv python3-bpfcc
      build-essential flex bison libelf-dev libssl-dev bc kmod linux-source-6.1)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    apt-get update -q >&2
    apt-get install -y -q "${missing[@]}" >&2
fi
# Debian's bcc lives in /usr/lib/python3/dist-packages for /usr/bin/python3,
# so the venv is made from that interpreter with --system-site-packages.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import drgn, typer, tabulate, qemu.qmp, pytest' 2>/dev/null; then
    /usr/bin/python3 -m venv --system-site-packages .venv
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]' >&2
fi
