# Sourced by debian-source.sh and debian-kernel.sh: apt options for Debian
# suites the machine's own sources do not list, without touching them.
#
#   side_apt SUITE...    e.g. side_apt sid; side_apt bullseye bullseye-security
#
# sets APT_OPTS to a side configuration of our own -- a sources list, lists
# and cache under $PAGEEXT_CACHE/apt -- with the archive URI of the machine's
# own sources (a -security suite takes the URI of the machine's security
# suite), and reads the suites' index when it is missing or a day old.
side_apt() {
    local cache=${PAGEEXT_CACHE:-/var/cache/pageext-inspect} uris main_uri sec_uri s key
    uris=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '$1 == "deb" { print $2 }';
           cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }')
    main_uri=$(echo "$uris" | grep -v -- '-security' | head -n 1)
    sec_uri=$(echo "$uris" | grep -- '-security' | head -n 1)
    [ -n "$main_uri" ] || { echo "side-apt: no archive URI in the machine's apt sources" >&2; return 2; }
    key=$(echo "$*" | tr ' ' '+')
    local side=$cache/apt list=$cache/apt/sources-$key.list lists=$cache/apt/lists-$key
    mkdir -p "$side/cache/archives/partial" "$lists/partial"
    : > "$list.tmp"
    for s in "$@"; do
        case $s in
            *-security) echo "deb ${sec_uri:-${main_uri%/debian}/debian-security} $s main" ;;
            *) echo "deb $main_uri $s main" ;;
        esac >> "$list.tmp"
    done
    mv "$list.tmp" "$list"
    APT_OPTS=(-o Dir::Etc::sourcelist="$list" -o Dir::Etc::sourceparts=/nonexistent
              -o Dir::State::Lists="$lists" -o Dir::Cache="$side/cache")
    if [ -z "$(find "$lists" -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]; then
        echo "side-apt: apt-get update for $* (side configuration in $side)" >&2
        apt-get "${APT_OPTS[@]}" update -q >&2
    fi
}
