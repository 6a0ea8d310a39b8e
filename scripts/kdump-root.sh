#!/usr/bin/env bash
# A minimal root with Debian's kexec-tools and makedumpfile for a foreign
# guest architecture (arm64): the test VM shares it read-only at /host, as it
# shares the host's own root with an x86_64 guest, so that the guest's
# `chroot /host kexec -s -p ...` and its capture kernel's `chroot /host
# makedumpfile ...` run the same way (scripts/testvm.py).  Prints the root's
# path on the last line.
#
#   scripts/kdump-root.sh arm64
#
# The packages and their dependency closure are downloaded through a private
# apt state (scripts/foreign-apt.sh); the root keeps only the two programs,
# the dynamic loader and the libraries they need (readelf NEEDED, followed
# recursively), plus empty /proc /sys /dev /tmp to mount on.  Cached in
# $PAGEEXT_CACHE/kdump-root-ARCH/ (default /var/cache/pageext-inspect).
set -euo pipefail
arch=${1:-arm64}
case $arch in
    arm64) triplet=aarch64-linux-gnu; loader=ld-linux-aarch64.so.1 ;;
    *) echo "kdump-root: unknown architecture $arch (arm64)" >&2; exit 2 ;;
esac
cache=${PAGEEXT_CACHE:-/var/cache/pageext-inspect}
root=$cache/kdump-root-$arch
if [ -x "$root/usr/bin/makedumpfile" ] && [ -x "$root/usr/sbin/kexec" ]; then echo "$root"; exit 0; fi
log() { echo "kdump-root-$arch: $*" >&2; }
command -v readelf >/dev/null || { log "readelf not found (apt-get install binutils)"; exit 1; }
tmp=$(mktemp -d /tmp/kdump-root-$arch.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/foreign-apt.sh"
log "reading the $arch package index"
foreign_apt "$arch" "$tmp"
apt-get "${APT_OPTS[@]}" install --download-only -y --no-install-recommends kexec-tools makedumpfile \
    >"$tmp/download.log" 2>&1 || {
    cat "$tmp/update.log" "$tmp/download.log" >&2
    log "could not download kexec-tools:$arch makedumpfile:$arch"; exit 1; }
mkdir "$tmp/x"
for deb in "$tmp"/cache/archives/*.deb; do dpkg-deb -x "$deb" "$tmp/x"; done
new=$root.$$
rm -rf "$new"
mkdir -p "$new/usr/sbin" "$new/usr/bin" "$new/lib/$triplet" "$new"/{proc,sys,dev,tmp}
install -m 0755 "$tmp/x/sbin/kexec" "$new/usr/sbin/kexec"
install -m 0755 "$tmp/x/usr/bin/makedumpfile" "$new/usr/bin/makedumpfile"
cp -L "$tmp/x/lib/$loader" "$new/lib/$triplet/$loader"
ln -s "$triplet/$loader" "$new/lib/$loader"
# The libraries, by name, wherever the packages put them.
todo=("$new/usr/sbin/kexec" "$new/usr/bin/makedumpfile")
while [ ${#todo[@]} -gt 0 ]; do
    f=${todo[0]}; todo=("${todo[@]:1}")
    for lib in $(readelf -d "$f" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p'); do
        [ -e "$new/lib/$triplet/$lib" ] && continue
        src=$(find "$tmp/x/lib/$triplet" "$tmp/x/usr/lib/$triplet" -maxdepth 1 -name "$lib" 2>/dev/null | head -n 1)
        [ -n "$src" ] || { log "no $lib in the downloaded packages (needed by ${f##*/})"; exit 1; }
        cp -L "$src" "$new/lib/$triplet/$lib"
        todo+=("$new/lib/$triplet/$lib")
    done
done
rm -rf "$root" && mv "$new" "$root"
log "cached kexec-tools $(dpkg-deb -f "$tmp"/cache/archives/kexec-tools_*.deb Version)," \
    "makedumpfile $(dpkg-deb -f "$tmp"/cache/archives/makedumpfile_*.deb Version) in $root ($(du -sh "$root" | cut -f1))"
echo "$root"
