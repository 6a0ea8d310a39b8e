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
    5.10) suites=("bullseye main" "bullseye-security main") ;;
    7.2) suites=("sid main") ;;
    7.3) suites=("trixie-backports main") ;;
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

# The archive URIs of the machine's own sources (deb822 .sources or one-line
# .list), the same mirror for the side suites; security suites come from the
# URI the machine uses for its own security suite.
uris=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '$1 == "deb" { print $2 }';
       cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }')
main_uri=$(echo "$uris" | grep -v -- '-security' | head -n 1)
sec_uri=$(echo "$uris" | grep -- '-security' | head -n 1)
[ -n "$main_uri" ] || { log "no archive URI in the machine's apt sources"; exit 2; }

side=$cache/apt
mkdir -p "$side/lists/partial" "$side/cache/archives/partial" "$side/dl"
list=$side/sources-$version.list
: > "$list.tmp"
for s in "${suites[@]}"; do
    case $s in
        *-security*) echo "deb ${sec_uri:-${main_uri%/debian}/debian-security} $s" ;;
        *) echo "deb $main_uri $s" ;;
    esac >> "$list.tmp"
done
mv "$list.tmp" "$list"
opts=(-o Dir::Etc::sourcelist="$list" -o Dir::Etc::sourceparts=/nonexistent
      -o Dir::State::Lists="$side/lists-$version" -o Dir::Cache="$side/cache")
mkdir -p "$side/lists-$version/partial"

exec 9>"$side/.lock-$version"
flock 9 || true
# A day-old index is refreshed: the suites move their kernels forward.
if [ -z "$(find "$side/lists-$version" -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]; then
    log "apt-get update for ${suites[*]} (side configuration in $side)"
    apt-get "${opts[@]}" update -q >&2
fi
pkgver=$(apt-cache "${opts[@]}" policy "$pkg" | awk '/Candidate:/ { print $2 }')
[ -n "$pkgver" ] && [ "$pkgver" != "(none)" ] || { log "$pkg is not in ${suites[*]}"; exit 2; }
dest=$cache/debsrc-$pkgver
tarball=$dest/$pkg.tar.xz
if [ ! -f "$tarball" ]; then
    log "downloading $pkg $pkgver"
    (cd "$side/dl" && rm -f "${pkg}"_*.deb && apt-get "${opts[@]}" download -q "$pkg=$pkgver" >&2)
    rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
    dpkg-deb --fsys-tarfile "$side/dl/${pkg}_"*.deb | tar -x -C "$dest.tmp" "./usr/src/$pkg.tar.xz"
    mv "$dest.tmp/usr/src/$pkg.tar.xz" "$dest.tmp/"
    rm -rf "$dest.tmp/usr" "$side/dl/${pkg}_"*.deb
    rm -rf "$dest"; mv "$dest.tmp" "$dest"
fi
echo "$pkgver"
echo "$tarball"
