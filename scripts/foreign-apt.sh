# Sourced by busybox-foreign.sh and kdump-root.sh: apt options to download
# Debian packages of a foreign architecture without touching the system's apt.
#
#   foreign_apt ARCH DIR [SUITE]
#
# With SUITE (e.g. trixie) the machine's own suites are read as that release's
# (bookworm -> trixie, bookworm-updates -> trixie-updates, ...): a newer
# program with its own newer libraries, for a chroot (kdump-root.sh amd64 trixie).
#
# sets APT_OPTS to a private state under DIR (lists, cache, an empty dpkg
# status, so that `install --download-only` fetches a package's whole
# dependency closure) fed from this machine's own apt sources, with
# APT::Architecture=ARCH, and reads the index (its log: DIR/update.log).
# Nothing is installed.
foreign_apt() {
    local arch=$1 dir=$2 suite=${3:-} own f
    mkdir -p "$dir/etc" "$dir/lists/partial" "$dir/cache/archives/partial"
    : > "$dir/status"
    cp /etc/apt/sources.list.d/*.sources "$dir/etc/" 2>/dev/null || true
    cp /etc/apt/sources.list.d/*.list "$dir/etc/" 2>/dev/null || true
    [ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$dir/etc/system.list"
    if [ -n "$suite" ]; then
        own=$(. /etc/os-release && echo "$VERSION_CODENAME")
        for f in "$dir"/etc/*; do
            [ -f "$f" ] && sed -i "s/\b$own\b/$suite/g" "$f"
        done
    fi
    # .list files may pin [arch=amd64]; the foreign index then simply lacks the package.
    chmod -R a+rwX "$dir"
    APT_OPTS=(-q -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$dir/etc"
              -o Dir::State::Lists="$dir/lists" -o Dir::Cache="$dir/cache" -o Dir::State::status="$dir/status"
              -o APT::Architecture="$arch" -o APT::Architectures::="$arch")
    # A suite whose index fails (e.g. a mirror mid-sync) is not fatal: the
    # download after it says whether the package was found.
    apt-get "${APT_OPTS[@]}" update >"$dir/update.log" 2>&1 || true
}
