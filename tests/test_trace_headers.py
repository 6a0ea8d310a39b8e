"""bpf.c compiled by bcc against real kernel trees' headers, with the layout probes.py picks.

The tracer compiles inspector/trace/bpf.c against the traced kernel's own
headers.  Here, on the host, against the configured build trees
scripts/build-kernel.sh keeps in /var/cache/pageext-inspect (build-VERSION-*,
whose ``source`` link is the kernel source): each one's include/linux/memory.h
decides the struct memory_notify layout (7.x: no status_change_nid, issue 18
item 4), and bcc must then compile bpf.c and load it into the running kernel.
The expected layout is the header's own text, never the tracer's.

Needs root and Debian's bcc (python3-bpfcc); a tree that is not there (or
not configured yet: no include/generated/autoconf.h) is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CACHE = Path("/var/cache/pageext-inspect")
VERSIONS = ("6.1", "6.12", "7.3")


def build_tree(version: str) -> Path | None:
    """A finished build of ``version`` with page_ext (its kernel-* directory is
    in the cache; a variant built without CONFIG_PAGE_EXTENSION has no
    mem_section.page_ext for bpf.c to read)."""
    for d in sorted(CACHE.glob(f"build-{version}-*")):
        done = CACHE / d.name.replace("build-", "kernel-", 1)
        config = d / ".config"
        if ((d / "source").is_dir() and (d / "include/generated/autoconf.h").exists() and (done / "vmlinux").exists()
                and config.exists() and "CONFIG_PAGE_EXTENSION=y\n" in config.read_text()):
            return d
    return None


def headers_tree(build: Path, out: Path) -> Path:
    """One tree of symlinks, source and generated headers together, laid out
    as bcc's BCC_KERNEL_SOURCE wants it (./include/linux/kconfig.h and all)."""
    src = (build / "source").resolve()
    for sub in ("arch/x86/include", "include"):
        (out / sub).mkdir(parents=True)
        for e in (src / sub).iterdir():
            (out / sub / e.name).symlink_to(e)
        (out / sub / "generated").symlink_to(build / sub / "generated")
    if (build / "include/config").is_dir():
        (out / "include/config").symlink_to(build / "include/config")
    return out


@pytest.mark.parametrize("version", VERSIONS)
def test_bpf_c_compiles_against_the_kernel_headers(version, tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("loading a BPF program needs root")
    from inspector.trace import probes
    try:
        probes.import_bcc()
    except probes.TraceError as e:
        pytest.skip(str(e))
    build = build_tree(version)
    if build is None:
        pytest.skip(f"no configured {version} build tree in {CACHE} (scripts/build-kernel.sh -v {version})")
    tree = headers_tree(build, tmp_path / "k")
    text = (tree / "include/linux/memory.h").read_text()
    body = text[text.index("struct memory_notify {"):]
    declared = "status_change_nid;" in body[:body.index("};")]
    assert declared is (version != "7.3")  # gone in 7.x: the node moved to struct node_notify
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tree))
    has, why = probes.memory_notify_has_nid({})
    assert has is declared, why
    b = probes.load_bpf({"mem_section": 0xFFFFFFFF82000000}, has)
    try:
        # PAGES_PER_SECTION of x86_64 (SECTION_SIZE_BITS 27, 4 KiB pages), compiled in from these headers.
        assert b["const_section_pages"].max_entries == 1 << (27 - 12)
    finally:
        b.cleanup()
