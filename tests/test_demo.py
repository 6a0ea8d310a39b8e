"""The demo core that ships in the package (issue 20, item 11), with no VM.

The oracles are what the demo guest's kernel said and what was planted in
it, kept in inspector/demo/demo.json by scripts/make-demo.py: the boot line
"allocated N bytes of page_ext", and the leaker (scripts/leaker.c, pid
recorded by the guest's shell) that grew a tmpfs file until the OOM panic.
When the 6.1 test kernel that made the demo is in the cache, the sliced
debug info must decode the core exactly as the full vmlinux does.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import inspect
from inspector.demo import HERE, facts, files

SHIPPED = ("vmcore", "vmlinux.debug.xz", "demo.json")


@pytest.fixture(scope="module")
def demo():
    core, vmlinux = files()
    return str(core), str(vmlinux), facts()


def test_what_ships_is_under_20_mb():
    sizes = {name: (HERE / name).stat().st_size for name in SHIPPED}
    assert sum(sizes.values()) < 20 << 20, sizes


def test_inspect_agrees_with_the_kernels_boot_line(demo):
    core, vmlinux, f = demo
    doc = json.loads(inspect(core, "-s", vmlinux, "--json").stdout)
    pe = doc["page_ext"]
    assert pe["total_bytes"] == f["page_ext_bytes_dmesg"] == pe["kernel_total_usage"]
    assert doc["kernel"]["release"] == f["release"]
    assert [c["status"] for c in doc["checks"]] == ["ok"] * len(doc["checks"])


def test_top_names_the_planted_leak_first(demo):
    core, vmlinux, f = demo
    doc = json.loads(inspect("top", core, "-s", vmlinux, "--json", "--limit", "1").stdout)
    first = doc["rows"][0]["key"]
    assert any(frame.startswith(f["leak_frame"] + "+") for frame in first), first
    by_comm = json.loads(inspect("top", core, "-s", vmlinux, "--by", "comm", "--json", "--limit", "1").stdout)
    assert by_comm["rows"][0]["key"] == f["leaker_comm"]


def test_owner_selects_the_leakers_pid(demo):
    core, vmlinux, f = demo
    lines = inspect("owner", core, "-s", vmlinux, "--pid", str(f["leaker_pid"]), "--json").stdout.splitlines()
    recs = [json.loads(line) for line in lines]
    assert {r["pid"] for r in recs} == {f["leaker_pid"]}
    # The pid was the guest shell's ($$) before it exec'd the leaker: its own
    # few pages say "sh"; the leak's, filling most of 512 MiB, say "leaker".
    comms = [r["comm"] for r in recs]
    assert set(comms) <= {"sh", f["leaker_comm"]}, set(comms)
    assert comms.count(f["leaker_comm"]) > 1000


def test_demo_command(demo):
    core, vmlinux, f = demo
    exe = str(Path(sys.executable).parent / "pageext-inspect")
    proc = subprocess.run([exe, "demo"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    shown = [line[2:] for line in proc.stdout.splitlines() if line.startswith("$ ")]
    assert [shlex.split(line)[1] for line in shown] == ["inspect", "top", "owner"]
    assert f["page_ext_line"] in proc.stdout
    args = subprocess.run([exe, "demo", "--args"], capture_output=True, text=True, timeout=600).stdout
    assert shlex.split(args) == [core, "-s", vmlinux]


@pytest.mark.vm  # no VM, but the built 6.1 kernel
def test_the_slice_reads_as_the_full_vmlinux(demo, kernel_dir):
    """Built-kernel check: the sliced debug info decodes every record as the
    full vmlinux of the same build does (the build id in both must match)."""
    core, vmlinux, f = demo
    full = kernel_dir / "vmlinux"
    ids = [subprocess.run(["readelf", "-n", p], capture_output=True, text=True).stdout for p in (vmlinux, full)]
    build_id = [line for line in ids[0].splitlines() if "Build ID" in line]
    if not build_id or build_id[0] not in ids[1]:
        pytest.skip(f"{full} is another build than the demo's (scripts/make-demo.py remakes the demo)")
    for args in (("owner", "--format", "debugfs"), ("table-check",), ("top", "--by", "comm")):
        sliced = inspect(*args, core, "-s", vmlinux).stdout
        whole = inspect(*args, core, "-s", str(full)).stdout
        assert sliced == whole, args


def test_without_the_demo_files_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    """A source tree or an install that lacks them: one line, exit 2."""
    import inspector.demo as demo_mod
    from inspector.cli import main
    monkeypatch.setattr(demo_mod, "HERE", tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["demo"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "demo core is not installed" in err[0], err


def test_a_damaged_debug_info_is_refused(monkeypatch, tmp_path):
    """An xz that unpacks to other bytes than demo.json's digest: DemoError, nothing cached."""
    import lzma
    import inspector.demo as demo_mod
    (tmp_path / "vmcore").write_bytes(b"x")
    (tmp_path / "vmlinux.debug.xz").write_bytes(lzma.compress(b"not the debug info"))
    (tmp_path / "demo.json").write_text(json.dumps({"vmlinux_debug_sha256": "0" * 64}))
    monkeypatch.setattr(demo_mod, "HERE", tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(demo_mod.DemoError, match="damaged install"):
        demo_mod.files()
    (tmp_path / "vmlinux.debug.xz").write_bytes(b"truncated")
    with pytest.raises(demo_mod.DemoError, match="cannot unpack"):
        demo_mod.files()
    assert not list((tmp_path / "cache").rglob("vmlinux-demo-*"))
