"""The library inside real drgn sessions: the %commands and the helpers, on 6.1 and 6.12 guests.

The snapshot is test_vm_owner.py's ``snap`` fixture (a boot of our own, in
``SNAP_SUBDIR``): the guest allocates, reads its own /sys/kernel/debug/page_owner
and dmesg, is paused (it stays paused here) and dumped.  Then real drgn,
the venv's ``drgn`` with our plugin found through the ``drgn.plugins`` entry
point, runs

* every %command on the vmcore (``drgn -c``), and the core ones over QMP
  (``drgn --qemu``) on the paused guest: each prints what the CLI prints on
  the same target;
* a script that uses only the documented helpers (inspector.helpers), whose
  answers are checked against the kernel's own words: the page_owner text it
  printed before the pause, and its boot line "allocated N bytes of page_ext".
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import inspect, loads, release_tuple, vmlinux_release
from test_vm_owner import PAGE_TABLE_CHECK_SINCE, fields, has_timestamps, parse_debugfs
from test_vm_owner import snap  # noqa: F401  (module-scoped fixture: a boot of our own)

pytestmark = pytest.mark.vm

SNAP_SUBDIR = "drgn"
DRGN = Path(sys.executable).parent / "drgn"
SEP = "=====pageext-test====="


def before_pause(vm) -> dict:
    return {"dmesg": vm.dmesg(),
            "online_pages": sum(1 for s in vm.memory_blocks().values() if s == "online")
            * vm.block_size() // 4096}


def drgn(snap, code: str, *, qemu: bool = False, args: tuple = ()) -> subprocess.CompletedProcess:
    # QEMU's kdump files name no architecture: drgn needs to be told.
    target = ["--qemu", snap["vm"].qmp_path] if qemu else ["-c", snap["core"], "--architecture", "x86_64"]
    return subprocess.run([str(DRGN), *target, "-s", snap["vmlinux"], "-q", "-e", code, *args],
                          capture_output=True, text=True, timeout=900)


def run_commands(snap, commands: list[str], *, qemu: bool = False) -> list[str]:
    """Each %command's stdout, from one drgn session."""
    code = "from drgn.commands import run_command\nimport sys\n" + "".join(
        f"print({SEP!r}, flush=True)\ntry:\n    run_command(prog, {c!r})\nexcept Exception as e:\n"
        f"    print('ERROR:', e)\nsys.stdout.flush()\n" for c in commands)
    proc = drgn(snap, code, qemu=qemu)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split(SEP + "\n")[1:]


def cli(snap, *args: str, qemu: bool = False) -> str:
    target = ["--qemu", snap["vm"].qmp_path] if qemu else [snap["core"]]
    proc = inspect(args[0], *target, "-s", snap["vmlinux"], *args[1:], "--no-progress", check_rc=None)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.stdout


def without_target(text: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith("target "))


def test_plugin_registers_the_commands(snap):
    proc = drgn(snap, "from drgn.commands import DEFAULT_COMMAND_NAMESPACE as n\n"
                      "print(sorted(name for name, _ in n.enabled(prog)))")
    names = proc.stdout
    for name in ("pageext", "page_owner", "page_owner_top", "page_table_check", "alloc_tags"):
        assert f"'{name}'" in names, (name, proc.stdout, proc.stderr)


def test_help_inside_drgn_is_the_clis_text(snap):
    """%pageext --help and %help NAME print each command's help from the text
    the CLI's help prints (summary, option texts); %help lists the commands
    (drgn 0.3.0 has neither, issue 20)."""
    from inspector.commands import all_commands
    pageext, page_owner, listing = run_commands(snap, ["pageext --help", "help page_owner", "help"])
    for text, cmd in ((pageext, "inspect"), (page_owner, "owner")):
        assert "ERROR" not in text and "-h, --help" in text
        command = all_commands()[cmd]
        cli_help = inspect(cmd, "--help").stdout
        for opt in command.options:
            if not opt.cli_only:
                first = opt.help.split()[0]
                assert opt.flags[0] in text and first in text and opt.flags[0] in cli_help, (cmd, opt.flags)
        assert "pageext-inspect" not in text and f"%{command.drgn}" in text  # the examples as drgn commands
    rows = {line.split()[0]: line for line in listing.splitlines() if line.startswith("%")}
    for command in all_commands().values():
        if command.drgn:
            assert command.summary.rstrip(".").split(" (")[0] in rows[f"%{command.drgn}"]


def test_commands_on_a_vmcore_print_what_the_cli_prints(snap):
    pfn = min(k[0] for k in parse_debugfs(snap["kernel"]))
    pairs = [("pageext", ("inspect",)), ("pageext --sections", ("inspect", "--sections")),
             ("pageext_clients", ("clients",)),
             ("page_owner --format debugfs", ("owner", "--format", "debugfs")),
             (f"page_owner --pfn {pfn:#x} --json", ("owner", "--pfn", hex(pfn), "--json")),
             ("page_owner_top --by stack --limit 5", ("top", "--by", "stack", "--limit", "5"))]
    if fields(next(iter(parse_debugfs(snap["kernel"]).values())))["pid"] is not None:  # v5.11, 9cc7e96aa846
        pairs.append(("page_owner_top --by pid --limit 20", ("top", "--by", "pid", "--limit", "20")))
    if release_tuple(vmlinux_release(snap["vmlinux"])) >= PAGE_TABLE_CHECK_SINCE[0]:
        pairs.append(("page_table_check", ("table-check",)))
    if snap["version"] == "6.12":
        pairs += [("page_owner_top --format show_stacks --min-pages 5", ("top", "--format", "show_stacks",
                                                                          "--min-pages", "5")),
                  ("alloc_tags --limit 20", ("alloc-tags", "--limit", "20"))]
    got = run_commands(snap, [c for c, _ in pairs])
    for (command, args), out in zip(pairs, got):
        want = cli(snap, *args)
        if args[0] == "inspect":
            want = without_target(want)
        assert out == want, (command, out[:2000], want[:2000])
        assert len(out) > 40, (command, out)
    json_out = run_commands(snap, ["pageext --json"])[0]
    doc, want = loads(json_out), loads(cli(snap, "inspect", "--json"))
    assert doc.pop("target") is None and want.pop("target")["kind"] == "vmcore"
    assert doc == want


def test_commands_over_qmp_on_the_paused_guest(snap):
    """drgn --qemu on the paused guest: the same as the CLI over QMP, and as the vmcore."""
    got = run_commands(snap, ["pageext", "page_owner --format debugfs"], qemu=True)
    assert got[0] == without_target(cli(snap, "inspect", qemu=True))
    assert got[1] == cli(snap, "owner", "--format", "debugfs")  # the guest has not run since the dump


def test_a_bad_command_line_is_a_drgn_error_not_a_traceback(snap):
    got = run_commands(snap, ["page_owner --pfn nope", "page_owner_top --limit -1", "page_owner --range 9-3"])
    assert got[0].startswith("ERROR: bad --pfn") and got[1].startswith("ERROR:") and "at least 0" in got[1]
    assert got[2].startswith("ERROR: bad --range")


HELPER_SCRIPT = r'''
import json, sys
from drgn import Object
from drgn.helpers.linux.mm import pfn_to_page, page_to_pfn
from inspector.helpers import *

pfns = [int(p) for p in sys.argv[1].split(",")]
out = {"entry_size": page_ext_size(), "tables": [], "records": {}, "inited": static_key_enabled(prog["page_owner_inited"])}
for start_pfn, nr_pages, page_ext in for_each_page_ext_table():
    out["tables"].append([start_pfn, nr_pages, page_ext.value_()])
for pfn in pfns:
    pe = pfn_to_page_ext(pfn)
    assert pe.value_() == lookup_page_ext(pfn_to_page(pfn)).value_()
    po = get_page_owner(pfn_to_page(pfn))
    assert po.value_() == get_page_owner(pe).value_() == page_ext_data(pe, prog["page_owner_ops"]).value_()
    assert page_ext_next(pe).value_() == pe.value_() + page_ext_size()
    # pid, ts_nsec (v5.11), tgid, comm (v5.18): None where struct page_owner lacks them
    has = {m.name for m in po.type_.type.members}
    out["records"][pfn] = {"order": po.order.value_(), "gfp": po.gfp_mask.value_(),
                           "gfp_names": decode_gfp_mask(po.gfp_mask),
                           "pid": po.pid.value_() if "pid" in has else None,
                           "tgid": po.tgid.value_() if "tgid" in has else None,
                           "comm": po.comm.string_().decode("latin-1") if "comm" in has else None,
                           "ts": po.ts_nsec.value_() if "ts_nsec" in has else None, "flags": pe.flags.value_()}
out["beyond"] = pfn_to_page_ext(1 << 40).value_()
json.dump(out, open(sys.argv[2], "w"))
'''


def test_helpers_answer_as_the_kernel_does(snap, tmp_path):
    """A script with only the documented helpers; oracles: the kernel's own page_owner
    text (for records the guest did not change before the pause) and its dmesg line."""
    ours = parse_debugfs(snap["live"])  # the paused guest, read by us
    theirs = parse_debugfs(snap["kernel"])  # read by the kernel before the pause
    stable = sorted(k for k in theirs if ours.get(k) == theirs[k])
    assert len(stable) > 100
    pick = [k[0] for k in stable[:: max(1, len(stable) // 40)]][:40]
    script = tmp_path / "helpers.py"
    script.write_text(HELPER_SCRIPT)
    result = tmp_path / "out.json"
    proc = subprocess.run([str(DRGN), "-c", snap["core"], "--architecture", "x86_64", "-s", snap["vmlinux"],
                           "-q", str(script),
                           ",".join(map(str, pick)), str(result)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(result.read_text())  # the script's own json.dump: integers, not the CLI's hex
    # The boot line: N bytes for every online page, entry_size bytes each.
    printed = int(re.search(r"allocated (\d+) bytes of page_ext", snap["dmesg"]).group(1))
    assert out["entry_size"] * snap["online_pages"] == printed
    assert sum(n for _, n, _ in out["tables"]) == snap["online_pages"]
    assert out["inited"] is True and out["beyond"] == 0
    for pfn in pick:
        rec = out["records"][str(pfn)]
        (_, ts), block = next((k, b) for k, b in theirs.items() if k[0] == pfn)
        f = fields(block)
        assert (rec["order"], f"{rec['gfp']:#x}({rec['gfp_names']})", rec["pid"], rec["tgid"], rec["comm"],
                rec["ts"]) == (f["order"], f["gfp"], f["pid"], f["tgid"], f["comm"],
                               ts if has_timestamps(theirs) else None), (pfn, block[:300])
