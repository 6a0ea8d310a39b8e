#!/usr/bin/env bash
# Build (or reuse) the pageext-inspect test kernel.
#
# The kernel is Debian's linux-source-VERSION (5.10, 6.1, 6.12, 7.2 or 7.3,
# fetched by scripts/debian-source.sh), configured as `make tinyconfig` plus
# the fragment(s) given, and cached by a hash of the source package version,
# the fragments and RECIPE below. Outputs land in
#   $PAGEEXT_CACHE/kernel-<version>-<hash>/{bzImage,vmlinux,vmlinux-other,config,build.log}
# (RECIPE below is part of the key) and the directory is printed on the last line of stdout.
#
# vmlinux-other is the same tree re-linked with another KBUILD_BUILD_VERSION:
# a genuinely different build (different banner and build-id) that the tests
# use to check that a mismatched vmlinux is refused.
#
# Usage:
#   scripts/build-kernel.sh             # 6.1 + fixtures/kernel/{pageext-6.1,memcg,kdump,pidns}.config
#   scripts/build-kernel.sh 7.3 -f fixtures/kernel/pageext-6.1.config -f fixtures/kernel/alloc-tags.config
#   scripts/build-kernel.sh -v 6.12 -f fixtures/kernel/pageext-6.1.config \
#       -f fixtures/kernel/memcg.config -f fixtures/kernel/kdump.config -f fixtures/kernel/alloc-tags.config
#   scripts/build-kernel.sh -f A.config -f B.config           # B overrides A
#   scripts/build-kernel.sh -a i386 -f fixtures/kernel/page-idle-i386.config  # 32-bit (ARCH=i386)
#   scripts/build-kernel.sh -v 6.1 -S     # only print the kernel source directory (extracted if needed)
#   scripts/build-kernel.sh 6.12 -a arm64 -c  # only print the directory if it is built (else exit 1)
#   scripts/build-kernel.sh 6.12 -a arm64 -p 64k  # cross-built; fixtures/kernel/arm64{,-64k}.config
#
# -a ARCH is x86_64 (the default), i386 or arm64; a non-default ARCH is part of
# the cache key and of the directory names (kernel-<version>-i386-<hash>).
# arm64 is cross-compiled with gcc-aarch64-linux-gnu (installed with apt if
# missing); -p/--page-size 4k (default) or 64k picks fixtures/kernel/arm64-4k
# or arm64-64k.config, merged after the -f fragments (default arm64.config),
# and names the directory (kernel-6.12-arm64-64k-<hash>).  Its image is
# Image (arch/arm64/boot/Image), not bzImage.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
version=6.1
arch=x86_64
frags=()
print_src=
cached_only=
page_size=
# The version may also come first, as a word: build-kernel.sh 7.3 [-f ...]
case ${1:-} in [0-9]*) version=$1; shift ;; esac
# --page-size and --arch, spelled long, become -p and -a for getopts.
args=()
for a in "$@"; do
    case $a in
        --page-size) args+=(-p) ;; --page-size=*) args+=(-p "${a#*=}") ;;
        --arch) args+=(-a) ;; --arch=*) args+=(-a "${a#*=}") ;;
        *) args+=("$a") ;;
    esac
done
set -- ${args[@]+"${args[@]}"}
while getopts "v:f:a:p:Sch" opt; do
    case $opt in
        v) version=$OPTARG ;;
        a) arch=$OPTARG ;;
        f) frags+=("$(realpath "$OPTARG")") ;;
        p) page_size=$OPTARG ;;
        S) print_src=1 ;;
        c) cached_only=1 ;;
        h) sed -n '2,32p' "$0"; exit 0 ;;
        *) exit 2 ;;
    esac
done
image=arch/x86/boot/bzImage
case $arch in
    x86_64) karch=(); tag=$version; arch_key= ;;
    i386) karch=(ARCH=i386); tag=$version-i386; arch_key=" arch i386" ;;
    arm64)
        case ${page_size:=4k} in
            4k|64k) ;;
            *) echo "build-kernel: unknown --page-size $page_size (4k or 64k)" >&2; exit 2 ;;
        esac
        karch=(ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-); image=arch/arm64/boot/Image
        tag=$version-arm64-$page_size; arch_key=" arch arm64"
        [ ${#frags[@]} -gt 0 ] || frags=("$here/fixtures/kernel/arm64.config")
        # The page size's fragment comes last, so it is the one that counts (and is in the key).
        frags+=("$here/fixtures/kernel/arm64-$page_size.config") ;;
    *) echo "build-kernel: unknown -a $arch (x86_64, i386 or arm64)" >&2; exit 2 ;;
esac
if [ -n "$page_size" ] && [ "$arch" != arm64 ]; then
    echo "build-kernel: --page-size is for -a arm64 only" >&2; exit 2
fi
[ ${#frags[@]} -gt 0 ] || frags=("$here/fixtures/kernel/pageext-6.1.config" "$here/fixtures/kernel/memcg.config"
                                   "$here/fixtures/kernel/kdump.config" "$here/fixtures/kernel/pidns.config")
cache=${PAGEEXT_CACHE:-/var/cache/pageext-inspect}
mkdir -p "$cache"

log() { echo "build-kernel: $*" >&2; }

pkg=linux-source-$version
# Debian's source package, from the machine's own suites or a side apt
# configuration (scripts/debian-source.sh): its version, then its tarball.
{ read -r pkgver; read -r tarball; } < <("$here/scripts/debian-source.sh" "$version" | tail -n 2)
[ -n "${tarball:-}" ] && [ -f "$tarball" ] || { log "no source tarball for $pkg"; exit 1; }
for tool in flex bison bc cpio xz; do command -v $tool >/dev/null || missing_tools=1; done
if [ -n "${missing_tools:-}" ] || [ ! -f /usr/include/libelf.h ]; then
    log "installing the build dependencies with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q build-essential flex bison libelf-dev libssl-dev bc cpio xz-utils >&2
fi
if [ "$arch" = arm64 ] && ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    log "installing the arm64 cross compiler with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q gcc-aarch64-linux-gnu >&2
fi
# The README records which source versions a cold run used: say it on every run.
log "source: $pkg $pkgver"
src=$cache/src-$pkgver
extract_src() {
    [ -f "$src/Makefile" ] && return 0
    exec 8>"$cache/.lock-src-$pkgver"
    flock 8 || true
    [ -f "$src/Makefile" ] && return 0
    log "extracting $tarball"
    rm -rf "$src.tmp"; mkdir -p "$src.tmp"
    tar -C "$src.tmp" --strip-components=1 -xf "$tarball"
    mv "$src.tmp" "$src"
}
if [ -n "$print_src" ]; then
    extract_src
    echo "$src"
    exit 0
fi

# Bump RECIPE when the build steps below change what they produce.
RECIPE=1
# The default arch adds nothing to the key, so x86_64 hashes stay as they were.
hash=$( { echo "$pkgver recipe $RECIPE$arch_key"; cat "${frags[@]}"; } | sha256sum | cut -c1-12)
out=$cache/kernel-$tag-$hash
img_name=${image##*/}
cached() { [ -f "$out/$img_name" ] && [ -f "$out/vmlinux" ] && [ -f "$out/vmlinux-other" ]; }
if [ -n "$cached_only" ]; then
    cached || { log "not built: $out (run it without -c)"; exit 1; }
    echo "$out"; exit 0
fi
if ! cached; then
    # One build per kernel at a time: a second caller (another test module,
    # a benchmark) waits here instead of building into the same tree.
    exec 9>"$cache/.lock-$tag-$hash"
    flock 9 || true
fi
if cached; then
    log "cached: $out"
    echo "$out"
    exit 0
fi

extract_src

build=$cache/build-$tag-$hash
mkdir -p "$build"
log "configuring in $build"
make -s -C "$src" O="$build" "${karch[@]}" tinyconfig >&2
(cd "$build" && "$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "${frags[@]}" > "$build/merge.log" 2>&1) \
    || { cat "$build/merge.log" >&2; exit 1; }
make -s -C "$src" O="$build" "${karch[@]}" olddefconfig >> "$build/merge.log" 2>&1

# A variant (the same source and arch, other fragments) starts from the finished
# build tree of that kernel whose .config is nearest to this one: kbuild then
# recompiles only what the changed options reach (fixdep's per-option
# dependencies), so the 6.1 no-notrace variant costs a few files, not a whole
# kernel.  A base's own Makefile names its source directory, so only a tree of
# this very source package version is taken.
if [ ! -f "$build/vmlinux" ] && [ ! -d "$build/mm" ]; then
    best= best_diff=
    # build-<tag>-<12 hex> only: build-6.1-* would also match the i386 and
    # arm64 trees (build-6.1-i386-..., build-6.12-arm64-4k-...).
    for base in "$cache"/build-$tag-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]; do
        [ "$base" != "$build" ] && [ -f "$base/vmlinux" ] && grep -qxF "include $src/Makefile" "$base/Makefile" 2>/dev/null \
            || continue
        d=$(diff "$base/.config" "$build/.config" | grep -c '^[<>]' || true)
        if [ -z "$best" ] || [ "$d" -lt "$best_diff" ]; then best=$base best_diff=$d; fi
    done
    if [ -n "$best" ]; then
        log "starting from $best ($best_diff config lines differ; a finished build of the same source)"
        cp "$build/.config" "$build/.config.want"
        cp -a "$best/." "$build/"
        mv "$build/.config.want" "$build/.config"
        # Host tools (objtool) record their commands with the tree's absolute
        # path; a changed command rebuilds objtool, and a new objtool every
        # object it checks.  Both names are build-VERSION-<12 hex>: same length.
        # (arm64 has no objtool: no file may name the tree, and grep's "no
        # match" must not end the script under pipefail.)
        { grep -rlF --include='.*.cmd' "$best/" "$build" || true; } | xargs -r sed -i "s|$best/|$build/|g"
    fi
fi

# merge_config.sh drops options whose dependencies are off: fail loudly.
# Later fragments override earlier ones, so check each option's last word.
missing=0
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=*)
            grep -qxF "$line" "$build/.config" && continue
            # One fragment serves 5.10 to 7.3: an option this kernel's Kconfig
            # does not define at all (renamed or not yet there, e.g.
            # PROC_SYSCTL, which 7.x calls SYSCTL) is said, not fatal.
            sym=${line%%=*}; sym=${sym#CONFIG_}
            if ! grep -rqsE "^[[:space:]]*(menu)?config[[:space:]]+$sym\$" --include='Kconfig*' "$src"; then
                log "not in this kernel: ${line%%=*}"; continue
            fi
            log "config lost: $line (got: $(grep -E "^(# )?${line%%=*}[= ]" "$build/.config" || echo unset))"
            missing=1 ;;
        "# CONFIG_"*" is not set")
            opt=${line#\# }; opt=${opt%% *}
            if grep -q "^$opt=" "$build/.config"; then log "config not disabled: $opt"; missing=1; fi ;;
    esac
done < <(cat "${frags[@]}" | grep -E '^(CONFIG_|# CONFIG_.* is not set)' \
         | awk '{ key = ($1 == "#") ? $2 : substr($0, 1, index($0, "=") - 1); last[key] = $0; order[key] = NR }
                END { for (k in last) print order[k] "\t" last[k] }' | sort -n | cut -f2-)
[ $missing = 0 ] || { log "the fragment's dependencies are not met; fix the fragment"; exit 1; }

log "building $img_name and vmlinux with $(nproc) jobs (about 10 minutes on 2 cores); log: $build/build.log"
start=$(date +%s)
if ! make -C "$src" O="$build" "${karch[@]}" -j"$(nproc)" "$img_name" vmlinux > "$build/build.log" 2>&1; then
    tail -n 30 "$build/build.log" >&2
    log "kernel build failed"
    exit 1
fi
mkdir -p "$out.tmp"
cp "$build/$image" "$build/vmlinux" "$out.tmp/"
cp "$build/.config" "$out.tmp/config"
cp "$build/build.log" "$out.tmp/build.log"
log "re-linking with KBUILD_BUILD_VERSION=999 for vmlinux-other"
make -C "$src" O="$build" "${karch[@]}" -j"$(nproc)" KBUILD_BUILD_VERSION=999 vmlinux >> "$build/build.log" 2>&1
cp "$build/vmlinux" "$out.tmp/vmlinux-other"
rm -rf "$out"; mv "$out.tmp" "$out"
secs=$(( $(date +%s) - start ))
echo "$secs" > "$out/build-seconds"
log "built in $secs s: $out"
echo "$out"
