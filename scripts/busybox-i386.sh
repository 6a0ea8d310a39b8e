#!/usr/bin/env bash
# Fetch Debian's busybox-static for i386 (the 32-bit test kernel cannot run the
# host's x86_64 busybox) and print the path of its binary on the last line.
#
# Uses apt-get with a private state directory and APT::Architecture=i386, fed
# from this machine's own apt sources: the system's apt state (architectures,
# lists, installed packages) is not touched, and nothing is installed.  The
# binary is cached in $PAGEEXT_CACHE/busybox-i386/ (default /var/cache/pageext-inspect).
set -euo pipefail
cache=${PAGEEXT_CACHE:-/var/cache/pageext-inspect}/busybox-i386
bin=$cache/busybox
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
log() { echo "busybox-i386: $*" >&2; }
tmp=$(mktemp -d /tmp/busybox-i386.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/etc" "$tmp/lists/partial" "$tmp/cache/archives/partial" "$cache"
cp /etc/apt/sources.list.d/*.sources "$tmp/etc/" 2>/dev/null || true
cp /etc/apt/sources.list.d/*.list "$tmp/etc/" 2>/dev/null || true
[ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$tmp/etc/system.list"
# .list files may pin [arch=amd64]; the i386 index then simply lacks the package.
chmod -R a+rwX "$tmp"
opts=(-q -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$tmp/etc"
      -o Dir::State::Lists="$tmp/lists" -o Dir::Cache="$tmp/cache"
      -o APT::Architecture=i386 -o APT::Architectures::=i386)
log "reading the i386 package index"
# A suite whose i386 index fails (e.g. a mirror mid-sync) is not fatal: the
# download below says whether busybox-static was found.
apt-get "${opts[@]}" update >"$tmp/update.log" 2>&1 || true
(cd "$tmp" && apt-get "${opts[@]}" download busybox-static:i386 >"$tmp/download.log" 2>&1) || {
    cat "$tmp/update.log" "$tmp/download.log" >&2
    log "could not download busybox-static:i386"; exit 1; }
dpkg-deb -x "$tmp"/busybox-static_*_i386.deb "$tmp/x"
file "$tmp/x/bin/busybox" 2>/dev/null | grep -q "Intel 80386" || [ ! -x /usr/bin/file ] \
    || { log "the downloaded busybox is not an i386 binary"; exit 1; }
install -m 0755 "$tmp/x/bin/busybox" "$bin.tmp" && mv "$bin.tmp" "$bin"
log "cached $(dpkg-deb -f "$tmp"/busybox-static_*_i386.deb Version) in $bin"
echo "$bin"
