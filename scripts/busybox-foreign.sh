#!/usr/bin/env bash
# Fetch Debian's busybox-static for a foreign guest architecture (i386: the
# 32-bit test kernel cannot run the host's x86_64 busybox; arm64: the arm64
# guests) and print the path of its binary on the last line.
#
#   scripts/busybox-foreign.sh i386|arm64
#
# Uses apt-get with a private state directory and APT::Architecture=ARCH, fed
# from this machine's own apt sources: the system's apt state (architectures,
# lists, installed packages) is not touched, and nothing is installed.  The
# binary is cached in $PAGEEXT_CACHE/busybox-ARCH/ (default /var/cache/pageext-inspect).
set -euo pipefail
arch=${1:-i386}
case $arch in
    i386) magic="Intel 80386" ;;
    arm64) magic="ARM aarch64" ;;
    *) echo "busybox-foreign: unknown architecture $arch (i386 or arm64)" >&2; exit 2 ;;
esac
cache=${PAGEEXT_CACHE:-/var/cache/pageext-inspect}/busybox-$arch
bin=$cache/busybox
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
log() { echo "busybox-$arch: $*" >&2; }
tmp=$(mktemp -d /tmp/busybox-$arch.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$cache"
. "$(dirname "$0")/foreign-apt.sh"
log "reading the $arch package index"
foreign_apt "$arch" "$tmp"
(cd "$tmp" && apt-get "${APT_OPTS[@]}" download "busybox-static:$arch" >"$tmp/download.log" 2>&1) || {
    cat "$tmp/update.log" "$tmp/download.log" >&2
    log "could not download busybox-static:$arch"; exit 1; }
dpkg-deb -x "$tmp"/busybox-static_*_"$arch".deb "$tmp/x"
file "$tmp/x/bin/busybox" 2>/dev/null | grep -q "$magic" || [ ! -x /usr/bin/file ] \
    || { log "the downloaded busybox is not an $arch binary"; exit 1; }
install -m 0755 "$tmp/x/bin/busybox" "$bin.tmp" && mv "$bin.tmp" "$bin"
log "cached $(dpkg-deb -f "$tmp"/busybox-static_*_"$arch".deb Version) in $bin"
echo "$bin"
