"""trace's refusals that need no VM: the real CLI entry point, a faked environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inspector import cli


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["pageext-inspect", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    return exc.value.code, capsys.readouterr().err


def test_not_root_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    code, err = run_main(monkeypatch, capsys, "trace", "--duration", "1")
    assert code == 2
    assert err == "pageext-inspect: error: trace needs root (it loads BPF programs and kprobes): run it with sudo\n"


@pytest.mark.parametrize("machine", ["aarch64", "i686"])
def test_a_machine_not_validated_is_refused_in_one_line(machine, monkeypatch, capsys):
    """arm64 (and 32-bit x86) have no validated trace: one line, exit 2, before any root or kernel check."""
    real = os.uname()
    monkeypatch.setattr(os, "uname", lambda: os.uname_result((*real[:4], machine)))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    code, err = run_main(monkeypatch, capsys, "trace", "--duration", "1")
    assert code == 2
    assert err == (f"pageext-inspect: error: trace has been validated on x86_64 only, not on {machine}: README.md "
                   "('arm64 guests, 4K and 64K pages') says what an arm64 trace still needs\n")
    # The section it names is the README's.
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "### arm64 guests, 4K and 64K pages\n" in readme


def test_bad_probes_value_is_one_line(monkeypatch, capsys):
    code, err = run_main(monkeypatch, capsys, "trace", "--probes", "sideways")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--probes" in err


SOURCES = {"6.1": "src-6.1.192-3", "6.12": "src-6.12.118-1~deb12u1", "7.3": "src-7.3.4-1~bpo13+1"}


@pytest.mark.parametrize("version", sorted(SOURCES))
def test_memory_notify_layout_from_the_kernel_header(version, monkeypatch, tmp_path):
    """bpf.c's struct memory_notify layout is chosen from the kernel's own
    include/linux/memory.h: status_change_nid up to v6.16, gone in 7.x (its
    node moved to struct node_notify, include/linux/node.h)."""
    from inspector.trace import probes

    src = Path("/var/cache/pageext-inspect") / SOURCES[version]
    if not (src / "include/linux/memory.h").exists():
        pytest.skip(f"no {version} source in /var/cache/pageext-inspect (scripts/build-kernel.sh -v {version} -S)")
    text = (src / "include/linux/memory.h").read_text()
    # The oracle: the member is declared in the struct's body in this tree, or not at all.
    body = text[text.index("struct memory_notify {"):]
    declared = "status_change_nid;" in body[:body.index("};")]
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(src))
    has, why = probes.memory_notify_has_nid({})
    assert has is declared
    assert has is (version != "7.3")
    assert ("has status_change_nid" if has else "has no status_change_nid") in why
    # No header at all: kallsyms decides (node_notify() came with the v6.17 series).
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path))
    monkeypatch.setattr(probes, "kernel_header", lambda relpath, release=None: None)
    assert probes.memory_notify_has_nid({"node_notify": 1})[0] is False
    assert probes.memory_notify_has_nid({})[0] is True


# The node argument of online_pages()/offline_pages(), as each tree declares them
# (read by hand in include/linux/memory_hotplug.h): 5.10 passes online_type and
# nid to online_pages() and nothing to offline_pages(); 6.1 on pass the zone.
NODE_ARGS = {"5.10": {"online_pages": "nid", "offline_pages": None},
             "6.1": {"online_pages": "zone", "offline_pages": "zone"},
             "6.12": {"online_pages": "zone", "offline_pages": "zone"},
             "7.3": {"online_pages": "zone", "offline_pages": "zone"}}


@pytest.mark.parametrize("version", sorted(NODE_ARGS))
def test_hotplug_node_argument_from_the_kernel_header(version, monkeypatch):
    from pathlib import Path

    from inspector.trace import probes

    src = Path("/var/cache/pageext-inspect") / {"5.10": "src-5.10.262-1", **SOURCES}[version]
    if not (src / "include/linux/memory_hotplug.h").exists():
        pytest.skip(f"no {version} source in /var/cache/pageext-inspect (scripts/build-kernel.sh -v {version} -S)")
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(src))
    assert probes.hotplug_node_args() == NODE_ARGS[version]
    # No header: the zone form, every kernel since 5.12.
    monkeypatch.setattr(probes, "kernel_header", lambda relpath, release=None: None)
    assert probes.hotplug_node_args() == {"online_pages": "zone", "offline_pages": "zone"}


@pytest.mark.parametrize("version", sorted(SOURCES))
def test_prepare_online_actions_from_the_kernel_header(version, monkeypatch):
    """MEM_PREPARE_ONLINE / MEM_FINISH_OFFLINE (v6.9 c5f1e2d18909 to v6.18):
    in Debian's 6.12.118 header (as enumerators), not in 6.1's (too old) nor
    7.3's (removed by 300709fbefd1, v6.19).  bpf.c names them only then."""
    from inspector.trace import probes

    src = Path("/var/cache/pageext-inspect") / SOURCES[version]
    if not (src / "include/linux/memory.h").exists():
        pytest.skip(f"no {version} source in /var/cache/pageext-inspect (scripts/build-kernel.sh -v {version} -S)")
    # The oracle: the tree's own memory_block_online() sends it, or not.
    sends = "memory_notify(MEM_PREPARE_ONLINE" in (src / "drivers/base/memory.c").read_text()
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(src))
    assert probes.notifier_has_prepare_online() is sends is (version == "6.12")
    monkeypatch.setattr(probes, "kernel_header", lambda relpath, release=None: None)
    assert probes.notifier_has_prepare_online() is False


# tracefs enabled_functions lines as the test kernels printed them after
# "p:k1 memory_notify" in kprobe_events was enabled (/work runs of 2026-12-07):
# 7.3.4 after enable, disable, enable; 7.2.13 after one enable; 7.2.13 after
# enable, disable, enable, whose next memory_notify() jumped to 0x2.
SOUND_73 = "memory_notify (1) R         \ttramp: 0xffffffffa0400000 (kprobe_ftrace_handler+0x0/0x18f) " \
           "->kprobe_ftrace_handler+0x0/0x18f"
SOUND_72 = "memory_notify (1) R         \ttramp: 0xffffffffa0400000 (kprobe_ftrace_handler+0x0/0x189) " \
           "->kprobe_ftrace_handler+0x0/0x189"
BROKEN_72 = "memory_notify (1) R         \ttramp: 0xffffffffa0400000 (kprobe_ftrace_handler+0x0/0x189)"


@pytest.mark.parametrize("lines, want", [
    ([SOUND_73], None),
    ([SOUND_72], None),
    ([BROKEN_72], "memory_notify"),
    (["vfs_read (1)   \t->trace_function+0x0/0x120", BROKEN_72.replace("memory_notify", "online_pages")], "online_pages"),
    ([], None),
])
def test_a_kprobe_trampoline_without_a_call_target_is_found(tmp_path, lines, want):
    from inspector.trace.probes import broken_kprobe_trampoline
    f = tmp_path / "enabled_functions"
    f.write_text("".join(line + "\n" for line in lines))
    assert broken_kprobe_trampoline((str(tmp_path / "absent"), str(f))) == want
    assert broken_kprobe_trampoline((str(tmp_path / "absent"),)) == ""  # nothing read: not "sound"


def test_the_tracer_refuses_and_detaches_on_a_broken_trampoline(monkeypatch):
    from inspector.trace import probes
    detached = []

    class B:
        def attach_kprobe(self, event, fn_name):
            pass

        attach_kretprobe = attach_kprobe

        def detach_kprobe(self, event):
            detached.append(("kprobe", event))

        def detach_kretprobe(self, event):
            detached.append(("kretprobe", event))

    monkeypatch.setattr(probes, "broken_kprobe_trampoline", lambda: "memory_notify")
    with pytest.raises(probes.TraceError) as e:
        probes.choose_probes(B(), {"memory_notify": 1}, None, "auto")
    assert "refusing to trace" in str(e.value) and "memory_notify" in str(e.value) and "\n" not in str(e.value)
    assert detached == [("kprobe", "memory_notify"), ("kretprobe", "memory_notify")]
