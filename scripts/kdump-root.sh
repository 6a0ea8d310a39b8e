#!/usr/bin/env bash
# A minimal root with Debian's kexec-tools and makedumpfile for a foreign
# guest architecture (arm64), or for x86_64 from a newer Debian release: the
# test VM shares it read-only at /host, as it shares the host's own root with
# an x86_64 guest, so that the guest's `chroot /host kexec -s -p ...` and its
# capture kernel's `chroot /host makedumpfile ...` run the same way
# (scripts/testvm.py).  Prints the root's path on the last line.
#
#   scripts/kdump-root.sh arm64
#   scripts/kdump-root.sh amd64 trixie   # makedumpfile 1.7.6 for an x86_64 guest of 6.12 or later
#
# Why the second: bookworm's makedumpfile 1.7.2 (Oct 2022) reads page types
# the old way (the type's bit cleared in page_type), so on 6.12 and later,
# where the type is the top byte (PGTY_slab 0xf5, PGTY_buddy 0xf0), -d 31
# takes slab pages for free buddy pages and drops them: the memory block
# list the tool reads lives there.  The capture kernel runs this root's
# makedumpfile (TestVM.crash(makedumpfile_root=...)); kexec stays the host's.
#
# The packages and their dependency closure are downloaded through a private
# apt state (scripts/foreign-apt.sh); the root keeps only the two programs,
# the dynamic loader and the libraries they need (readelf NEEDED, followed
# recursively), plus empty /proc /sys /dev /tmp to mount on.  Cached in
# $PAGEEXT_CACHE/kdump-root-ARCH[-SUITE]/ (default /var/cache/pageext-inspect).
set -euo pipefail
arch=${1:-arm64}
suite=${2:-}
case $arch in
    arm64) triplet=aarch64-linux-gnu; loader=ld-linux-aarch64.so.1; interp=lib ;;
    amd64) triplet=x86_64-linux-gnu; loader=ld-linux-x86-64.so.2; interp=lib64 ;;
    *) echo "kdump-root: unknown architecture $arch (arm64, amd64)" >&2; exit 2 ;;
esac
name=kdump-root-$arch${suite:+-$suite}
cache=${PAGEEXT_CACHE:-/var/cache/pageext-inspect}
root=$cache/$name
if [ -x "$root/usr/bin/makedumpfile" ] && [ -x "$root/usr/sbin/kexec" ]; then echo "$root"; exit 0; fi
log() { echo "$name: $*" >&2; }
command -v readelf >/dev/null || { log "readelf not found (apt-get install binutils)"; exit 1; }
tmp=$(mktemp -d /tmp/$name.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/foreign-apt.sh"
log "reading the $arch package index${suite:+ of $suite}"
foreign_apt "$arch" "$tmp" "$suite"
apt-get "${APT_OPTS[@]}" install --download-only -y --no-install-recommends kexec-tools makedumpfile \
    >"$tmp/download.log" 2>&1 || {
    cat "$tmp/update.log" "$tmp/download.log" >&2
    log "could not download kexec-tools:$arch makedumpfile:$arch"; exit 1; }
mkdir "$tmp/x"
for deb in "$tmp"/cache/archives/*.deb; do dpkg-deb -x "$deb" "$tmp/x"; done
new=$root.$$
rm -rf "$new"
mkdir -p "$new/usr/sbin" "$new/usr/bin" "$new/lib/$triplet" "$new"/{proc,sys,dev,tmp}
# Where the packages put them: /sbin or /usr/sbin (merged /usr since trixie).
first() { for f in "$@"; do [ -e "$f" ] && { echo "$f"; return 0; }; done; log "none of: $*"; exit 1; }
install -m 0755 "$(first "$tmp/x/sbin/kexec" "$tmp/x/usr/sbin/kexec")" "$new/usr/sbin/kexec"
install -m 0755 "$(first "$tmp/x/usr/bin/makedumpfile" "$tmp/x/usr/sbin/makedumpfile")" "$new/usr/bin/makedumpfile"
cp -L "$(first "$tmp/x/lib/$triplet/$loader" "$tmp/x/usr/lib/$triplet/$loader" "$tmp/x/lib/$loader" \
    "$tmp/x/$interp/$loader" "$tmp/x/usr/$interp/$loader")" "$new/lib/$triplet/$loader"
mkdir -p "$new/$interp"
[ -e "$new/$interp/$loader" ] || ln -s "$([ "$interp" = lib ] || echo ../lib/)$triplet/$loader" "$new/$interp/$loader"
# The libraries, by name, wherever the packages put them.
todo=("$new/usr/sbin/kexec" "$new/usr/bin/makedumpfile")
while [ ${#todo[@]} -gt 0 ]; do
    f=${todo[0]}; todo=("${todo[@]:1}")
    for lib in $(readelf -d "$f" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p'); do
        [ -e "$new/lib/$triplet/$lib" ] && continue
        src=$(find "$tmp/x/lib/$triplet" "$tmp/x/usr/lib/$triplet" -maxdepth 1 -name "$lib" 2>/dev/null | head -n 1 || true)
        [ -n "$src" ] || { log "no $lib in the downloaded packages (needed by ${f##*/})"; exit 1; }
        cp -L "$src" "$new/lib/$triplet/$lib"
        todo+=("$new/lib/$triplet/$lib")
    done
done
rm -rf "$root" && mv "$new" "$root"
log "cached kexec-tools $(dpkg-deb -f "$tmp"/cache/archives/kexec-tools_*.deb Version)," \
    "makedumpfile $(dpkg-deb -f "$tmp"/cache/archives/makedumpfile_*.deb Version) in $root ($(du -sh "$root" | cut -f1))"
echo "$root"
