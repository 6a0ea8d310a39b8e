#!/usr/bin/env bash
# Fetch (or reuse) Debian's linux-source-VERSION and print the path of its
# tarball (linux-source-VERSION.tar.xz) on the last line of stdout, and its
# package version on the line before.
#
# The machine's own suites (bookworm: 6.1, 6.12) install through apt as usual.
# The others are reached through a side apt configuration of our own -- its
# own sources list, lists and cache under $PAGEEXT_CACHE/apt, with the archive
# URI that the machine's own sources use -- so the system's sources are never
# edited:
#   5.10  bullseye, bullseye-security
#   7.2   sid
#   7.3   trixie-backports
# Those packages are downloaded (apt-get download), not installed: the
# tarball is unpacked from the .deb into $PAGEEXT_CACHE/debsrc-PKGVERSION/.
#
# Usage:
#   scripts/debian-source.sh 7.3        # ... /var/cache/pageext-inspect/debsrc-7.3.4-1~bpo13+1/linux-source-7.3.tar.xz
#   scripts/debian-source.sh 5.10
set -euo pipefail

version=${1:?usage: $0 VERSION (5.10, 6.1, 6.12, 7.2 or 7.3)}
pkg=linux-source-$version
cache=${PAGEEXT_CACHE:-/var/cache/pageext-inspect}
export DEBIAN_FRONTEND=noninteractive
log() { echo "debian-source: $*" >&2; }

case $version in
    6.1|6.12) suites=() ;;
    5.10) suites=(bullseye bullseye-security) ;;
    7.2) suites=(sid) ;;
    7.3) suites=(trixie-backports) ;;
    *) log "no Debian suite known for linux-source-$version (5.10, 6.1, 6.12, 7.2, 7.3)"; exit 2 ;;
esac

if [ ${#suites[@]} -eq 0 ]; then
    tarball=/usr/src/$pkg.tar.xz
    if [ ! -f "$tarball" ]; then
        log "installing $pkg with apt"
        apt-get update -q >&2
        apt-get install -y -q "$pkg" >&2
    fi
    dpkg-query -W -f='${Version}\n' "$pkg"
    echo "$tarball"
    exit 0
fi

. "$(dirname "$0")/side-apt.sh"
mkdir -p "$cache/apt/dl"
exec 9>"$cache/apt/.lock-$version"
flock 9 || true
side_apt "${suites[@]}"
opts=("${APT_OPTS[@]}")
pkgver=$(apt-cache "${opts[@]}" policy "$pkg" | awk '/Candidate:/ { print $2 }')
[ -n "$pkgver" ] && [ "$pkgver" != "(none)" ] || { log "$pkg is not in ${suites[*]}"; exit 2; }
dest=$cache/debsrc-$pkgver
tarball=$dest/$pkg.tar.xz
if [ ! -f "$tarball" ]; then
    log "downloading $pkg $pkgver"
    (cd "$cache/apt/dl" && rm -f "${pkg}"_*.deb && apt-get "${opts[@]}" download -q "$pkg=$pkgver" >&2)
    rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
    dpkg-deb --fsys-tarfile "$cache/apt/dl/${pkg}_"*.deb | tar -x -C "$dest.tmp" "./usr/src/$pkg.tar.xz"
    mv "$dest.tmp/usr/src/$pkg.tar.xz" "$dest.tmp/"
    rm -rf "$dest.tmp/usr" "$cache/apt/dl/${pkg}_"*.deb
    rm -rf "$dest"; mv "$dest.tmp" "$dest"
fi
echo "$pkgver"
echo "$tarball"
