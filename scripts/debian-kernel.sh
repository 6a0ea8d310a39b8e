#!/usr/bin/env bash
# Fetch (or reuse) Debian's stock kernel and its debug info as a test target.
#
# Downloads, without installing, the kernel image package that
# linux-image-amd64 depends on (linux-image-6.1.0-NN-amd64 on bookworm) and
# its linux-image-6.1.0-NN-amd64-dbg (about 860 MB), and extracts into
#   $PAGEEXT_CACHE/debian-<release>-<package version>/
#     vmlinuz        the kernel image, as Debian ships it
#     vmlinux        the same kernel with its DWARF (from the -dbg package)
#     System.map    made from vmlinux with nm, as the kernel's scripts/mksysmap
#                   does (the package's own is a placeholder pointing at -dbg)
#     config
#     modules/       lib/modules/<release>, kept to the modules in modules.load
#                    and their dependencies (modules.dep made here with depmod)
#     modules.load   what the test VM must insmod: the 9p share, virtio-pci,
#                    qemu_fw_cfg (so -device vmcoreinfo gets the guest's VMCOREINFO)
#     release        the kernel release (uname -r)
# The directory is printed on the last line of stdout.  A second run
# downloads nothing: each part is fetched only while it is missing, and the
# .debs are deleted once their contents are in place.
#
# Usage:
#   scripts/debian-kernel.sh                                   # what linux-image-amd64 depends on
#   scripts/debian-kernel.sh -p linux-image-6.1.0-56-cloud-amd64
#   scripts/debian-kernel.sh -s sid                            # Debian's newest (7.2)
#   scripts/debian-kernel.sh -s bullseye,bullseye-security     # 5.10 LTS
# -s reads other suites through a side apt configuration (scripts/side-apt.sh)
# that leaves the machine's own sources untouched.
set -euo pipefail

# The modules the test VM loads (scripts/testvm.py reads modules.load);
# their dependencies come from modules.dep.  Changing this list re-fetches
# the image package (not the -dbg one) on the next run.
VM_MODULES=(virtio_pci 9pnet_virtio 9p qemu_fw_cfg)

meta=linux-image-amd64
pkg=
suites=
usage="usage: $0 [-p linux-image-PACKAGE] [-s SUITE[,SUITE]]"
while getopts ":p:s:h" opt; do
    case $opt in
        p) pkg=$OPTARG ;;
        s) suites=$OPTARG ;;
        h) sed -n '2,27p' "$0"; exit 0 ;;
        :) echo "debian-kernel: -$OPTARG needs a package name ($usage)" >&2; exit 2 ;;
        *) echo "debian-kernel: unknown option -$OPTARG ($usage)" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || { echo "debian-kernel: unexpected argument '$1' ($usage)" >&2; exit 2; }

log() { echo "debian-kernel: $*" >&2; }
die() { log "$1"; exit "${2:-1}"; }
cache=${PAGEEXT_CACHE:-/var/cache/pageext-inspect}
mkdir -p "$cache" || die "cannot create the cache directory $cache"
APT_OPTS=()
if [ -n "$suites" ]; then
    . "$(dirname "$0")/side-apt.sh"
    side_apt ${suites//,/ } || die "cannot read the suites $suites" 2
fi

# The package to fetch: -p, else linux-image-amd64's dependency, as the apt
# lists on the machine say (read the index first if there are none).
depends_of() { apt-cache "${APT_OPTS[@]}" depends "$1" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n 1; }
candidate() { apt-cache "${APT_OPTS[@]}" policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p' | grep -vx '(none)'; }
given=$pkg
resolve() {  # sets pkg version release dbg dbg_version out debs
    pkg=${given:-$(depends_of "$meta")}
    [ -n "$pkg" ] || die "apt knows no $meta: is a Debian archive in the apt sources?"
    case $pkg in
        linux-image-*) ;;
        *) die "not a kernel image package: $pkg" 2 ;;
    esac
    version=$(candidate "$pkg") || die "apt knows no package $pkg" 2
    # The release is the package name less linux-image- and a -unsigned suffix.
    release=${pkg#linux-image-}; release=${release%-unsigned}
    dbg=linux-image-$release-dbg
    dbg_version=$(candidate "$dbg") \
        || die "apt knows no $dbg: the -dbg packages are in the main archive (and bookworm-security) beside the image"
    out=$cache/debian-$release-$version
    debs=$out.debs
}
if [ -z "$(apt-cache "${APT_OPTS[@]}" policy "$meta" 2>/dev/null)" ]; then
    log "reading the package index (apt-get update)"
    apt-get "${APT_OPTS[@]}" update -q >&2
fi
resolve

have_modules() {  # every wanted module is in modules/, or built in
    local m f
    [ -f "$out/modules/modules.dep" ] && [ -f "$out/modules.load" ] || return 1
    [ "$(cat "$out/modules.load")" = "$(printf '%s\n' "${VM_MODULES[@]}")" ] || return 1
    for m in "${VM_MODULES[@]}"; do
        f=$(module_files "$out/modules" "$m") || return 1
        for f in $f; do [ -f "$out/modules/$f" ] || return 1; done
    done
}
# modules.dep paths (relative to the modules dir) of module $2 and its
# dependencies; nothing for a built-in module; fails for an unknown name.
module_files() {
    awk -v want="$2" '
        function base(p) { sub(/.*\//, "", p); sub(/\.ko(\.[a-z]+)?$/, "", p); gsub(/-/, "_", p); return p }
        FNR == 1 { builtin = (FILENAME ~ /modules\.builtin$/) }
        builtin { if (base($1) == want) found = 1; next }
        { sub(/:$/, "", $1); if (base($1) == want) { found = 1; for (i = 1; i <= NF; i++) print $i } }
        END { exit !found }' "$1/modules.dep" $([ -f "$1/modules.builtin" ] && echo "$1/modules.builtin")
}
have_image() { [ -f "$out/vmlinuz" ] && [ -f "$out/config" ] && have_modules; }
have_dbg() { [ -f "$out/vmlinux" ]; }
have_map() { [ -s "$out/System.map" ] && ! grep -q "The real System.map" "$out/System.map"; }
done_() { have_image && have_dbg && have_map && [ -f "$out/release" ]; }

if ! done_; then
    # About to download: the lists on the machine may name a version the
    # archive no longer has (the security archive keeps only the latest).
    log "refreshing the package index before downloading"
    apt-get "${APT_OPTS[@]}" update -q >&2 || log "apt-get update failed: using the package lists as they are"
    resolve
fi
if ! done_; then
    # One fetch per kernel at a time: a second caller waits here.
    exec 9>"$cache/.lock-debian-$release-$version"
    flock 9 || true
fi
if done_; then
    log "cached: $out"
    echo "$out"
    exit 0
fi
mkdir -p "$out" "$debs"
chmod a+rwx "$debs"  # apt-get download runs as _apt where it can
t0=$(date +%s)

fetch() {  # download package $1 version $2 into $debs unless it is already there
    if ! ls "$debs/$1"_*.deb >/dev/null 2>&1; then
        log "downloading $1 $2"
        (cd "$debs" && apt-get "${APT_OPTS[@]}" download -q "$1=$2" >&2) || die "apt-get download $1=$2 failed"
    fi
    ls "$debs/$1"_*.deb
}

if ! have_image; then
    deb=$(fetch "$pkg" "$version")
    t1=$(date +%s)
    tree=$out/.image.tmp
    rm -rf "$tree"; mkdir -p "$tree"
    log "extracting $pkg"
    dpkg-deb -x "$deb" "$tree" || die "$deb: not a Debian package"
    debs_x=("$deb")
    # Debian's 7.x ("+deb14") image package holds nothing itself: the kernel
    # is in linux-binary-RELEASE, config and System.map in linux-base-RELEASE,
    # the modules in linux-modules-RELEASE, all under /usr/lib/modules.
    if [ ! -d "$tree/boot" ] && [ ! -f "$tree/usr/lib/modules/$release/vmlinuz" ]; then
        for part in linux-binary-$release linux-base-$release linux-modules-$release; do
            v=$(candidate "$part") || die "$pkg has no /boot and apt knows no $part"
            d=$(fetch "$part" "$v"); debs_x+=("$d")
            log "extracting $part"
            dpkg-deb -x "$d" "$tree" || die "$d: not a Debian package"
        done
    fi
    mods=$tree/lib/modules/$release
    [ -d "$mods" ] || mods=$tree/usr/lib/modules/$release
    for f in vmlinuz config; do
        if [ -f "$tree/boot/$f-$release" ]; then mv "$tree/boot/$f-$release" "$tree/$f"
        elif [ -f "$mods/$f" ]; then mv "$mods/$f" "$tree/$f"
        else die "$pkg has no /boot/$f-$release (nor $f in its modules directory)"; fi
    done
    [ -d "$mods" ] || die "$pkg has no modules directory for $release"
    # The package ships no modules.dep (its postinst runs depmod): make it.
    if [ "$mods" != "$tree/lib/modules/$release" ]; then mkdir -p "$tree/lib/modules"; mv "$mods" "$tree/lib/modules/"; fi
    mods=$tree/lib/modules/$release
    depmod -b "$tree" "$release" \
        || die "depmod failed on $pkg's modules"
    keep=()
    for m in "${VM_MODULES[@]}"; do
        files=$(module_files "$mods" "$m") || die "$pkg has no module $m"
        keep+=($files)
    done
    keep=($(printf '%s\n' "${keep[@]}" | sort -u))
    rm -rf "$out/modules"; mkdir -p "$out/modules"
    (cd "$mods" && cp --parents modules.* "$out/modules/" && { [ ${#keep[@]} -eq 0 ] || cp --parents "${keep[@]}" "$out/modules/"; })
    for f in vmlinuz config; do mv "$tree/$f" "$out/$f"; done
    printf '%s\n' "${VM_MODULES[@]}" > "$out/modules.load"
    rm -rf "$tree" "${debs_x[@]}"
    log "image and ${#keep[@]} module file(s) in place ($(( $(date +%s) - t1 )) s to extract)"
fi

if ! have_dbg; then
    deb=$(fetch "$dbg" "$dbg_version")
    t1=$(date +%s)
    member=./usr/lib/debug/boot/vmlinux-$release
    log "extracting $member (tar stops there, short of the 5 GB of module debug info)"
    # --occurrence lets tar stop at the member instead of reading to the end;
    # dpkg-deb then dies of SIGPIPE, which is fine when the file is whole.
    set +o pipefail
    dpkg-deb --fsys-tarfile "$deb" | tar -xO --occurrence=1 "$member" > "$out/vmlinux.tmp" || true
    if [ ! -s "$out/vmlinux.tmp" ]; then
        # 7.x ("+deb14"): /usr/lib/debug/boot/vmlinux-RELEASE is a symlink
        # (tar -O gives nothing for it) to lib/modules/RELEASE/vmlinux.
        member=./usr/lib/debug/lib/modules/$release/vmlinux
        log "no file at the boot path; extracting $member"
        dpkg-deb --fsys-tarfile "$deb" | tar -xO --occurrence=1 "$member" > "$out/vmlinux.tmp" || true
    fi
    set -o pipefail
    [ -s "$out/vmlinux.tmp" ] || die "$deb has no $member"
    readelf -S "$out/vmlinux.tmp" 2>/dev/null | grep -q '\.debug_info' \
        || die "$out/vmlinux.tmp: no .debug_info (truncated extraction?)"
    mv "$out/vmlinux.tmp" "$out/vmlinux"
    rm -f "$deb"
    log "vmlinux in place ($(( $(date +%s) - t1 )) s to extract)"
fi
if ! have_map; then
    nm -n "$out/vmlinux" | grep -v ' [aNUw] ' > "$out/System.map.tmp" || die "nm failed on $out/vmlinux"
    mv "$out/System.map.tmp" "$out/System.map"
fi
echo "$release" > "$out/release"
rmdir "$debs" 2>/dev/null || true
log "ready in $(( $(date +%s) - t0 )) s: $out ($(du -sh "$out" | cut -f1))"
echo "$out"
